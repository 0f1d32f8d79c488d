"""Small helpers every room shares: logging set-up, YAML options, error handling, the default device, prefetching."""

from __future__ import annotations

import argparse
import logging
import math
import numbers
import pickle
import queue
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, TypeVar

import numpy as np
import yaml

T = TypeVar("T")


class JobError(RuntimeError):
    """A job stopped by something outside its input (a killed worker process); reported as one line."""


# What a job reports as one error line (bad input, OS faults naming their path, unreadable YAML or pickles, a killed
# worker); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError, NotImplementedError, yaml.YAMLError, pickle.UnpicklingError,
               EOFError, JobError)


def yaml_mapping(text: str) -> Dict[str, Any]:
    """argparse type for ``--*-conf '{tau: 8}'`` options (a YAML or JSON mapping)."""
    try:
        value = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"invalid YAML {text!r}: {error_line(exc)}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping like '{{tau: 8}}', got {text!r}")
    return value


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int when it is a whole number >= ``minimum`` (bools are not numbers), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_float(value: Any, name: str) -> float:
    """``value`` as a float when it is a finite number > 0 (bools are not numbers), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum`` (``--top-k 0`` is refused at parsing, not ignored later)."""

    def parse(text: str) -> int:
        try:
            return positive_int(int(text), "the value", minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None

    parse.__name__ = f"int >= {minimum}"
    return parse


def error_line(exc: BaseException) -> str:
    """One line for a user-facing error: an OSError as ``path: reason``, a YAML error as ``file:line: problem``."""
    if isinstance(exc, OSError) and exc.filename is not None:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{where}: {exc.strerror or exc}"
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.YAMLError) and mark is not None:
        problem = getattr(exc, "problem", None) or "unreadable"
        if str(mark.name).startswith("<"):  # parsed from a string: no file to name
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return f"{mark.name}:{mark.line + 1}: invalid YAML: {problem}"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (torch imported here: command lines start without it)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_logging(level: str | int = "INFO") -> None:
    """ESPnet-style log lines on stderr; quiets faiss's per-CPU-variant loader messages."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def run_job(name: str, job: Callable[[], Dict[str, Any]], logger: logging.Logger) -> int:
    """Run a job: its summary as one ``<name> done: k=v, ...`` line (exit 0), or bad input as one error line (exit 1)."""
    try:
        summary = job()
    except USER_ERRORS as exc:
        logger.debug("%s failed", name, exc_info=True)
        logger.error("%s: %s", name, error_line(exc))
        return 1
    logger.info("%s done: %s", name, ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


_END = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield ``items`` in order, made up to ``depth`` ahead by a background thread (0: in this thread).

    Batch reading (ark seeks, audio decoding, resampling, the head) then overlaps the training step on a
    GPU; reading and torch ops mostly release the GIL. An error while making an item is raised here.
    """
    if depth <= 0:
        yield from items
        return
    ready: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: Any) -> bool:
        """Queue ``entry`` unless the consumer has stopped (then False, and nothing waits forever)."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((_END, exc))

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = ready.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars, tuples and non-string keys made plain JSON types (for results files)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
