"""Output folders shared by runs: a lock per folder (and per shard), and the temp files of dead runs removed.

A run that writes a whole dump folder holds ``OUT/.softtok.lock`` exclusively; an array task (``--shard i/N``)
holds it shared plus ``OUT/shards/<stem>.lock`` exclusively, so array tasks run side by side but never beside a
whole run or a second copy of their own shard. Locks are ``flock`` s (the kernel drops them when a holder dies, so a
dead run's lock file is simply taken over; Linux NFS maps them onto POSIX locks); an exclusive holder writes its
pid into the file so a refused run can name it, and the last holder removes the file. Temp files (``<name>.tmp.<pid>``, files or folders) whose pid is
not alive on this machine are removed only inside what the caller holds locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

logger = logging.getLogger(__name__)

LOCK_NAME = ".softtok.lock"
TEMP_SUFFIX = re.compile(r"\.tmp\.(\d+)$")


class OutputBusy(ValueError):
    """An output folder (or shard) is being written by another live run."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one we may not signal, or pid <= 0, counts as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(folder: Path, prefix: str = "") -> List[Path]:
    """Entries of ``folder`` named ``<prefix>....tmp.<pid>`` whose pid is not alive (never this process's)."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = TEMP_SUFFIX.search(entry.name)
        if match and entry.name.startswith(prefix) and int(match.group(1)) != os.getpid() \
                and not pid_alive(int(match.group(1))):
            found.append(entry)
    return sorted(found)


def remove_stale_temps(folder: Path, prefix: str = "") -> List[Path]:
    """Remove the temp files and folders of dead runs in ``folder`` (names starting with ``prefix``)."""
    removed = stale_temps(Path(folder), prefix)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if removed:
        logger.info("removed %d temp file(s) of dead runs in %s (e.g. %s)", len(removed), folder, removed[0].name)
    return removed


def _pid_in(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holders(out_dir: Path) -> List[int]:
    """Live pids written in the folder's lock file and its shard lock files."""
    files = [out_dir / LOCK_NAME, *sorted((out_dir / "shards").glob("*.lock"))]
    pids = {pid for pid in map(_pid_in, files) if pid is not None and pid_alive(pid)}
    return sorted(pids)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a lock file's last holder may have removed it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class FileLock:
    """A non-blocking ``flock`` on ``path``; the exclusive holder writes its pid into the file, and the last holder
    removes the file when it lets go (so finished runs leave no lock files)."""

    def __init__(self, path: Path, shared: bool = False):
        self.path, self.shared = path, shared
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        """Take the lock; False when another open file description holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its last holder had just removed: lock the one at the path now
        if not self.shared:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock, removing the file when no other run holds it (shared holders may remain)."""
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except BlockingIOError:
            pass  # another shared holder still has it; it removes the file when it lets go
        finally:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked_output(out_dir: Path, shard_stems: Sequence[str] = (), whole: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` (exclusively when ``whole``, else shared) and each ``shards/<stem>.lock`` exclusively.

    Another live run holding any of them is one :class:`OutputBusy` line naming the folder and its pid. Temp files
    of dead runs inside what is held (the whole folder with the shard lock files of killed array tasks, or only the
    held shards' files) are removed on entry, and again on exit (a worker killed meanwhile leaves its temp files).
    """
    out_dir = Path(out_dir)
    locks = [FileLock(out_dir / LOCK_NAME, shared=not whole),
             *(FileLock(out_dir / "shards" / f"{stem}.lock") for stem in shard_stems)]
    taken: List[FileLock] = []

    def clean() -> None:
        if whole:  # no array task can be running: their shard lock files are a killed task's
            remove_stale_temps(out_dir)
            remove_stale_temps(out_dir / "shards")
            for lock in (out_dir / "shards").glob("*.lock"):
                lock.unlink(missing_ok=True)
        for stem in shard_stems:
            remove_stale_temps(out_dir / "shards", prefix=f"{stem}.")

    try:
        for lock in locks:
            if not lock.acquire():
                pids = holders(out_dir)
                who = f"pid {', '.join(map(str, pids))}" if pids else "a run that left no pid"
                raise OutputBusy(f"{out_dir}: in use by another softtok run ({who}); wait for it to end or stop it")
            taken.append(lock)
        clean()
        yield
    finally:
        if len(taken) == len(locks):
            clean()
        for lock in reversed(taken):
            lock.release()
