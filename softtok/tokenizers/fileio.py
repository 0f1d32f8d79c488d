"""Atomic file writing and Kaldi ark/scp I/O: nothing is ever left half-written.

Every writer goes to ``<name>.tmp.<pid>`` first and is renamed into place only when
complete, so an interrupted job leaves either the old file or no file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

import kaldiio
from kaldiio.compression_header import kTwoByteAuto
import numpy as np
import yaml

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_files(*paths: os.PathLike | str) -> Iterator[List[Path]]:
    """Temporary siblings of ``paths`` (a file and its metadata), renamed into place together if the block succeeds.

    The later paths' old files are removed first, then each temporary is renamed in order (the last one last), so
    an interruption leaves an earlier file without a later one, which a reader can detect, never a new file beside
    an old one's metadata. A failed block (a full disk) leaves the old files as they were.
    """
    targets = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in reversed(targets)][::-1]  # first renamed first
        yield tmps
        for later in targets[1:]:
            later.unlink(missing_ok=True)


def check_output(path: os.PathLike | str, option: str, is_dir: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be written: a file name that is a directory (or a folder
    that is a file), a path under a file, or a nearest existing folder that is read-only. Returns ``path``."""
    path = Path(path)
    if path.exists() and path.is_dir() != is_dir:
        kind = "a directory" if path.is_dir() else "a file"
        raise ValueError(f"{path}: is {kind}; {option} takes a {'directory' if is_dir else 'file name'}")
    folder = path if is_dir and path.exists() else path.parent  # where the writing happens
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"{existing}: is a file, so {option} {path} cannot be created under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{existing}: not writable (read-only file system or permissions), needed for {option} {path}")
    return path


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def yaml_text(data: dict) -> str:
    """A mapping as YAML text (keys in insertion order), as :func:`save_yaml` writes it."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def save_yaml(path: os.PathLike | str, data: dict) -> None:
    """Write a YAML file atomically (keys in insertion order)."""
    atomic_write_text(path, yaml_text(data))


def load_yaml(path: os.PathLike | str) -> dict:
    """Read a YAML mapping; a missing file, invalid YAML or invalid UTF-8 is a one-line error naming the file (and
    line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


def load_torch(path: os.PathLike | str, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """``torch.load`` of a checkpoint; a missing, truncated or foreign file is one error line naming it.

    ``weights_only=False`` unpickles arbitrary objects (runs code from the file): only for files this toolkit wrote.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001  (torch raises RuntimeError, EOFError, UnpicklingError, ... here)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"{path}: cannot load this checkpoint (truncated or not a PyTorch file?): "
                         f"{first.strip()}") from None


def sha256_of(path: os.PathLike | str) -> str:
    """SHA-256 hex digest of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write a .npy file in place (to a temporary path of :func:`atomic_path` or :func:`atomic_files`)."""
    with open(path, "wb") as f:
        np.save(f, array)


def save_npy(path: os.PathLike | str, array: np.ndarray) -> None:
    """Write a .npy file atomically."""
    with atomic_path(path) as tmp:
        write_npy(tmp, array)


TWO_BYTE_COMPRESSION = kTwoByteAuto  # Kaldi's two-byte global-range compression (CM2)


class ArkScpWriter:
    """Write matrices to ``<stem>.ark`` + ``<stem>.scp`` atomically.

    The scp names the final ark path, and both files appear only on :meth:`close`
    after a successful run (use as a context manager). ``compress`` stores Kaldi two-byte compressed
    matrices (CM2: per-matrix min/range, 16-bit steps; half the size, read back as float32 by kaldiio).
    """

    def __init__(self, ark_path: os.PathLike | str, scp_path: os.PathLike | str, compress: bool = False):
        self.ark_path = Path(ark_path).absolute()
        self.compression = TWO_BYTE_COMPRESSION if compress else None
        self.scp_path = Path(scp_path)
        self.ark_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_ark = self.ark_path.with_name(f"{self.ark_path.name}.tmp.{os.getpid()}")
        self._file = open(self._tmp_ark, "wb")
        self._scp_lines: List[str] = []

    def write(self, key: str, matrix: np.ndarray) -> None:
        """Append one matrix (float32 matrices stay float32 unless compressed); a non-finite one is refused."""
        if " " in key or not key:
            raise ValueError(f"bad ark key {key!r}")
        if not np.isfinite(matrix).all():
            raise ValueError(f"{self.ark_path}: utterance {key!r}: refusing to write NaN or infinite values")
        start = self._file.tell()
        kaldiio.save_ark(self._file, {key: np.ascontiguousarray(matrix)}, compression_method=self.compression)
        offset = start + len(key.encode()) + 1
        self._scp_lines.append(f"{key} {self.ark_path}:{offset}\n")

    def close(self, ok: bool = True) -> None:
        """Rename the ark into place and write the scp, or discard everything (also when the rename fails)."""
        self._file.close()
        try:
            if ok:
                os.replace(self._tmp_ark, self.ark_path)
                atomic_write_text(self.scp_path, "".join(self._scp_lines))
        finally:
            if self._tmp_ark.exists():
                self._tmp_ark.unlink()

    def __enter__(self) -> "ArkScpWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


_FILE_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
               stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a directory"}


def check_regular_file(path: os.PathLike | str, what: str = "") -> None:
    """Refuse (one line, naming ``what`` and the path) a missing path or one that is not a regular file (a FIFO, a
    device, a folder), without opening it: reading a FIFO or a device could block forever or never end."""
    prefix = f"{what}: " if what else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{prefix}{path}: file not found") from None
    except OSError as exc:
        raise ValueError(f"{prefix}{path}: cannot stat it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS.items() if test(mode)), "not a regular file")
        raise ValueError(f"{prefix}{path} is {kind}, not a regular file; refusing to read it")


_ARK_LOCATION = re.compile(r"^(.*):\d+(\[[^\]]*\])?$")  # path:offset, optionally [row/column slice]


def ark_of(location: str) -> Optional[str]:
    """The file an scp entry's location reads (``ark:offset`` → ``ark``), or None for a ``command |`` pipe."""
    if location.rstrip().endswith("|"):
        return None
    match = _ARK_LOCATION.match(location)
    return match.group(1) if match else location


def read_scp_entries(scp_path: os.PathLike | str) -> List[Tuple[str, str]]:
    """Read ``(key, ark:offset)`` pairs of an scp file, checking it is a regular file and non-empty."""
    scp_path = Path(scp_path)
    check_regular_file(scp_path)
    entries, seen = [], set()
    with open(scp_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{scp_path}:{lineno}: expected `key ark:offset`")
            if parts[0] in seen:
                raise ValueError(f"{scp_path}:{lineno}: duplicate key {parts[0]!r}")
            seen.add(parts[0])
            entries.append((parts[0], parts[1].strip()))
    if not entries:
        raise ValueError(f"{scp_path}: file is empty")
    return entries


def load_matrix(scp_path: os.PathLike | str, key: str, location: str) -> np.ndarray:
    """The matrix at ``location`` (an scp entry's ``ark:offset``); a broken entry, one pointing at a FIFO or another
    non-regular file, or NaN/infinite values are an error naming the key (never a token id or a NaN probability
    further on)."""
    ark = ark_of(location)
    if ark is not None:
        check_regular_file(ark, f"{scp_path}: {key!r}")
    try:
        matrix = kaldiio.load_mat(location)
    except Exception as exc:  # kaldiio raises many types for a broken ark
        raise ValueError(f"{scp_path}: cannot read {key!r} from {location}: {exc}") from exc
    if not np.isfinite(matrix).all():
        rows = np.flatnonzero(~np.isfinite(matrix).reshape(len(matrix), -1).all(axis=1))
        raise ValueError(f"{scp_path}: utterance {key!r} has NaN or infinite values in {len(rows)} frame(s) "
                         f"(first: frame {rows[0]}) of {location}")
    return matrix


def iter_scp(scp_path: os.PathLike | str, start: int = 0, end: int | None = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(key, matrix)`` in scp order (entries ``[start, end)``); a broken entry is an error naming the key."""
    for key, location in read_scp_entries(scp_path)[start:end]:
        yield key, load_matrix(scp_path, key, location)


_PLAIN_MATRIX, _COMPRESSED_MATRIX = {b"FM", b"DM"}, {b"CM", b"CM2", b"CM3"}  # Kaldi binary matrix type tokens


def _read_binary_shape(f) -> Tuple[int, int] | None:
    """(rows, cols) from the Kaldi binary matrix header at the file position, or None for another format."""
    head = f.read(6)  # "\0B" + type token ("FM ", "CM2 ", ...)
    token = head[2:].split(b" ", 1)[0]
    if head[:2] != b"\0B" or token not in _PLAIN_MATRIX | _COMPRESSED_MATRIX:
        return None
    f.seek(len(token) + 3 - len(head), os.SEEK_CUR)
    if token in _COMPRESSED_MATRIX:  # GlobalHeader: min, range (float32), rows, cols (int32)
        _, _, rows, cols = struct.unpack("<ffii", f.read(16))
        return rows, cols
    size_rows, rows, size_cols, cols = struct.unpack("<bibi", f.read(10))
    return (rows, cols) if size_rows == size_cols == 4 else None


def read_matrix_shapes(scp_path: os.PathLike | str) -> Dict[str, Tuple[int, int]]:
    """(rows, cols) of every matrix of an scp from its ark header alone (a few bytes each, not the data).

    Entries that are not plain ``ark:offset`` Kaldi binary matrices (slices, pipes, ASCII) are loaded whole.
    """
    shapes: Dict[str, Tuple[int, int]] = {}
    with contextlib.ExitStack() as stack:
        handles: Dict[str, BinaryIO] = {}
        for key, location in read_scp_entries(scp_path):
            ark, _, offset = location.rpartition(":")
            shape = None
            if ark and offset.isdigit():
                try:
                    if ark not in handles:
                        check_regular_file(ark, f"{scp_path}: {key!r}")
                        handles[ark] = stack.enter_context(open(ark, "rb"))
                    handles[ark].seek(int(offset))
                    shape = _read_binary_shape(handles[ark])
                except (OSError, struct.error) as exc:
                    raise ValueError(f"{scp_path}: cannot read the header of {key!r} at {location}: {exc}") from exc
            if shape is None:
                logger.debug("%s: %r is not a plain binary matrix; reading it whole for its shape", scp_path, key)
                shape = tuple(load_matrix(scp_path, key, location).shape)
            shapes[key] = shape
    return shapes


def load_scp_dict(scp_path: os.PathLike | str) -> Dict[str, np.ndarray]:
    """All matrices of an scp in memory, keyed by utterance."""
    return dict(iter_scp(scp_path))


UTT2NUM_FRAMES = "utt2num_frames"  # Kaldi's name: `utt frames` per line, beside feats.scp


def write_num_frames(scp_path: os.PathLike | str) -> Path:
    """Write ``utt2num_frames`` beside an scp (frame counts from the ark headers), so readers need not open arks."""
    path = Path(scp_path).with_name(UTT2NUM_FRAMES)
    shapes = read_matrix_shapes(scp_path)
    atomic_write_text(path, "".join(f"{key} {shape[0]}\n" for key, shape in shapes.items()))
    return path


def _read_num_frames(path: Path) -> Dict[str, int]:
    """Parse a ``utt2num_frames`` file; a malformed line is an error naming it."""
    counts: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{lineno}: expected `utt frames`")
            if parts[0] in counts:
                raise ValueError(f"{path}:{lineno}: duplicate key {parts[0]!r}")
            counts[parts[0]] = int(parts[1])
    return counts


def load_num_frames(scp_path: os.PathLike | str) -> Dict[str, int]:
    """Frame count of every matrix of an scp, in scp order, without reading the matrices.

    From ``utt2num_frames`` beside it when that lists the same keys (dump-features writes it), else from the
    ark headers (older dumps; a few bytes per utterance).
    """
    keys = [key for key, _ in read_scp_entries(scp_path)]
    path = Path(scp_path).with_name(UTT2NUM_FRAMES)
    if path.is_file():
        counts = _read_num_frames(path)
        if counts.keys() == set(keys):
            return {key: counts[key] for key in keys}
        logger.warning("%s: keys differ from %s; reading frame counts from the ark headers", path, scp_path)
    return {key: shape[0] for key, shape in read_matrix_shapes(scp_path).items()}
