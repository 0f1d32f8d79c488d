"""Local worker processes for ``--nj N``: one spawned process per shard, supervised so that nothing hangs.

A worker that dies without a result (the out-of-memory killer's SIGKILL, a segfault) fails the job with one line
naming its shard, and the other workers are stopped; a worker's exception is raised in the parent. SIGTERM or
SIGINT of the parent stops every worker, and a worker unwinds on SIGTERM like on an exception (its temp files
go); a worker whose parent dies is sent SIGTERM (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, List, Sequence, Tuple

from tqdm import tqdm

from softtok.common import USER_ERRORS, JobError

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 10.0


def _raise_exit(signum: int, frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # one unwinding: a second signal does not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    logger.error("stopped by %s", signal.Signals(signum).name)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT raise ``SystemExit(128 + signal)`` so ``finally`` blocks run
    (temp files removed, workers stopped, locks released); a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        raise SystemExit(128 + signal.SIGTERM)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a JobError with its type and message."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:
        return JobError(f"{type(exc).__name__}: {exc}")


def _child(target: Callable[..., Any], args: tuple, conn: Connection, parent_pid: int) -> None:
    """A worker's body: SIGINT left to the parent, SIGTERM unwinds; sends ("ok", result) or ("error", exc, trace)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    _die_with_parent(parent_pid)
    # tqdm's default lock is a multiprocessing semaphore, which a killed worker would leak (a warning at exit);
    # spawned workers share no lock anyway.
    tqdm.set_lock(threading.RLock())
    try:
        outcome: tuple = ("ok", target(*args))
    except SystemExit:
        raise
    except BaseException as exc:
        outcome = ("error", _portable(exc), traceback.format_exc())
    with contextlib.suppress(OSError):
        conn.send(outcome)
    conn.close()


def died_message(name: str, proc: Any) -> str:
    """One line: which worker died and how."""
    code = proc.exitcode
    if code is not None and code < 0:
        name_of = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        how = f"was killed by {name_of}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        how = f"exited with status {code}"
    return f"worker for {name} (pid {proc.pid}) {how} before finishing; the other workers were stopped, rerun to resume"


def _stop(procs: List[Any], grace_s: float) -> None:
    """Join the workers for up to ``grace_s`` each, then SIGTERM (and at last SIGKILL) any still running."""
    for proc in procs:
        proc.join(timeout=grace_s)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _collect(names: Sequence[str], procs: List[Any], conns: List[Connection]) -> List[Any]:
    """Each worker's result in order; the first error or death is raised (the caller stops the rest)."""
    results: List[Any] = [None] * len(procs)
    pending = dict(enumerate(conns))
    while pending:
        for conn in wait(list(pending.values())):
            i = conns.index(conn)
            del pending[i]
            try:
                outcome = conn.recv()
            except EOFError:  # closed without a result: the worker died
                procs[i].join(timeout=STOP_GRACE_S)
                raise JobError(died_message(names[i], procs[i])) from None
            if outcome[0] == "error":
                exc, trace = outcome[1], outcome[2]
                if not isinstance(exc, USER_ERRORS):
                    logger.error("worker for %s failed:\n%s", names[i], trace.rstrip())
                raise exc
            results[i] = outcome[1]
    return results


def run_workers(target: Callable[..., Any], jobs: Sequence[Tuple[str, tuple]]) -> List[Any]:
    """``target(*args)`` for each ``(name, args)`` of ``jobs``, each in its own spawned process; their results.

    ``target`` must be importable (a module-level function). Any failure stops every worker before it is raised.
    """
    ctx = mp.get_context("spawn")
    procs: List[Any] = []
    conns: List[Connection] = []
    ok = False
    with exit_on_signals():
        try:
            for name, args in jobs:
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(target, args, send, os.getpid()), name=name, daemon=True)
                proc.start()
                send.close()  # the worker's end: EOF here once it exits
                procs.append(proc)
                conns.append(recv)
            results = _collect([name for name, _ in jobs], procs, conns)
            ok = True
            return results
        finally:
            _stop(procs, STOP_GRACE_S if ok else 0.0)
            for conn in conns:
                conn.close()
