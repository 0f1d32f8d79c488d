"""Kaldi-style data directories: read, validate by Kaldi's rules, and write atomically.

A data dir holds ``wav.scp`` (utt -> audio path, absolute or relative to the dir),
optional ``text``, ``utt2spk`` and ``segments`` (seg -> recording, start, end in seconds).
Every problem is reported as one :class:`DataError` line naming the file and the key.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from softtok.tokenizers.fileio import atomic_write_text
from softtok.tokenizers.outdir import remove_stale_temps

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Segment:
    """A span of a recording, in seconds."""

    recording: str
    start: float
    end: float


@dataclass
class DataDir:
    """An in-memory, validated Kaldi data directory."""

    path: Path
    wav_scp: Dict[str, str]
    text: Optional[Dict[str, str]] = None
    utt2spk: Optional[Dict[str, str]] = None
    segments: Optional[Dict[str, Segment]] = None
    extra: Dict[str, Dict[str, str]] = field(default_factory=dict)

    @property
    def utt_ids(self) -> List[str]:
        """Utterance ids in sorted (Kaldi) order: segment ids when segments exist."""
        return list(self.segments) if self.segments is not None else list(self.wav_scp)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def audio_source(self, utt: str) -> Tuple[str, Optional[Segment]]:
        """Resolved audio path and optional segment span of one utterance."""
        if self.segments is not None:
            seg = self.segments[utt]
            return self.resolve(self.wav_scp[seg.recording]), seg
        return self.resolve(self.wav_scp[utt]), None

    def resolve(self, path: str) -> str:
        """A wav.scp path: absolute as is, relative to the data dir otherwise."""
        if path.endswith("|"):
            raise DataError(f"{self.path / 'wav.scp'}: piped commands are not supported: {path!r}")
        return path if os.path.isabs(path) else str(self.path / path)


_FIELD_SEP = re.compile(r"[ \t]+")  # Kaldi's separators: a no-break space or other Unicode space is not one


def _odd_char(key: str) -> Optional[str]:
    """The first character of a key that no Kaldi tool would split on yet is invisible or ambiguous (a byte-order
    mark, a no-break or other Unicode space, a zero-width or control character), as ``U+XXXX (name)``; else None."""
    for char in key:
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            return f"U+{ord(char):04X} ({unicodedata.name(char, 'control character').lower()})"
    return None


def _decoded_lines(path: Path) -> Iterable[Tuple[int, str]]:
    """(line number, text) of a UTF-8 file without its line end; invalid UTF-8 is an error naming file and line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid UTF-8 (byte {raw[exc.start]:#04x} at column "
                                f"{exc.start + 1})") from None


def _split_line(path: Path, lineno: int, line: str) -> Tuple[str, str]:
    """(key, value) of one line, split at its first run of spaces or tabs; a key with an odd character is refused."""
    if not line.strip(" \t"):
        raise DataError(f"{path}:{lineno}: empty line")
    parts = _FIELD_SEP.split(line.lstrip(" \t"), maxsplit=1)
    key = parts[0]
    odd = _odd_char(key)
    if odd:
        bom = ": save the file as UTF-8 without a BOM" if "\ufeff" in key else ""
        raise DataError(f"{path}:{lineno}: key {key!r} holds {odd}{bom}")
    return key, parts[1].strip() if len(parts) > 1 else ""


def read_kaldi_map(path: Path, n_fields: Optional[int] = None, require_sorted: bool = True) -> Dict[str, str]:
    """Read a ``key value...`` file; keys must be unique and (unless told otherwise) sorted bytewise.

    Fields are separated by spaces and tabs only, as Kaldi's tools split them. A key holding a byte-order mark, a
    no-break space or another invisible character is refused, not stripped: the id must be what the file says.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    result: Dict[str, str] = {}
    prev: Optional[str] = None
    for lineno, line in _decoded_lines(path):
        key, value = _split_line(path, lineno, line)
        if n_fields is not None and len(value.split()) != n_fields - 1:
            raise DataError(f"{path}:{lineno}: key {key!r}: expected {n_fields} fields")
        if key in result:
            raise DataError(f"{path}:{lineno}: duplicate key {key!r}")
        if require_sorted and prev is not None and key.encode() < prev.encode():
            raise DataError(f"{path}:{lineno}: key {key!r} is not sorted (after {prev!r}); run `LC_ALL=C sort`")
        result[key] = value
        prev = key
    if not result:
        raise DataError(f"{path}: file is empty")
    return result


def _parse_segments(path: Path, raw: Dict[str, str], recordings: Dict[str, str]) -> Dict[str, Segment]:
    segments = {}
    for seg_id, value in raw.items():
        rec, start_s, end_s = value.split()
        try:
            start, end = float(start_s), float(end_s)
        except ValueError:
            raise DataError(f"{path}: segment {seg_id!r}: start/end are not numbers") from None
        if not (math.isfinite(start) and math.isfinite(end)):
            raise DataError(f"{path}: segment {seg_id!r}: start/end {start_s} {end_s} are not finite numbers")
        if rec not in recordings:
            raise DataError(f"{path}: segment {seg_id!r}: recording {rec!r} not in wav.scp")
        if start < 0 or end <= start:
            raise DataError(f"{path}: segment {seg_id!r}: span [{start}, {end}] is not positive")
        segments[seg_id] = Segment(rec, start, end)
    return segments


def _check_same_keys(path: Path, keys: Iterable[str], expected: Iterable[str]) -> None:
    keys, expected = set(keys), set(expected)
    missing = sorted(expected - keys)
    extra = sorted(keys - expected)
    if missing:
        raise DataError(f"{path}: no entry for utterance {missing[0]!r} ({len(missing)} missing)")
    if extra:
        raise DataError(f"{path}: utterance {extra[0]!r} is not in wav.scp/segments ({len(extra)} extra)")


def load_data_dir(path: os.PathLike | str, require_text: bool = False) -> DataDir:
    """Read and validate a Kaldi data dir; raise :class:`DataError` on the first problem."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: data directory not found")
    wav_scp = read_kaldi_map(path / "wav.scp")
    for utt, value in wav_scp.items():
        if not value:
            raise DataError(f"{path / 'wav.scp'}: key {utt!r} has no audio path")
    segments = None
    if (path / "segments").exists():
        segments = _parse_segments(path / "segments", read_kaldi_map(path / "segments", 4), wav_scp)
    data = DataDir(path=path, wav_scp=wav_scp, segments=segments)
    utts = data.utt_ids
    if (path / "text").exists() or require_text:
        data.text = read_kaldi_map(path / "text")
        _check_same_keys(path / "text", data.text, utts)
    if (path / "utt2spk").exists():
        data.utt2spk = read_kaldi_map(path / "utt2spk", 2)
        _check_same_keys(path / "utt2spk", data.utt2spk, utts)
    return data


STALE_FILES = ("segments", "text", "utt2dur", "reco2dur", "utt2num_frames", "feats.scp", "cmvn.scp")


def write_kaldi_map(path: os.PathLike | str, mapping: Dict[str, str]) -> None:
    """Write ``key value`` lines sorted bytewise by key, atomically."""
    atomic_write_text(path, render_kaldi_map(mapping))


def speaker_files(data: DataDir) -> Dict[str, Dict[str, str]]:
    """Per-speaker files of a dir (spk2age, spk2gender, spk2accent, ...; not spk2utt), unsorted allowed."""
    files = sorted(p for p in data.path.glob("spk2*") if p.is_file() and p.name != "spk2utt" and ".tmp." not in p.name)
    return {p.name: read_kaldi_map(p, require_sorted=False) for p in files}


def render_kaldi_map(mapping: Dict[str, str]) -> str:
    """Kaldi map text, sorted bytewise by key (as write_kaldi_map writes it)."""
    return "".join(f"{k} {mapping[k]}\n" for k in sorted(mapping, key=lambda k: k.encode()))


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it (keeps reruns from touching files)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def write_data_dir(out_dir: os.PathLike | str, wav: Dict[str, str], text: Optional[Dict[str, str]] = None,
                   utt2spk: Optional[Dict[str, str]] = None, spk_files: Optional[Dict[str, Dict[str, str]]] = None,
                   segments: Optional[Dict[str, str]] = None) -> Path:
    """Write a data dir (+ segments and per-speaker files), drop stale files, and re-validate it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    utts = list(segments) if segments is not None else list(wav)
    utt2spk = utt2spk if utt2spk is not None else {u: u for u in utts}
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk, key=lambda k: k.encode()):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    files = {"wav.scp": wav, "utt2spk": utt2spk, "spk2utt": {s: " ".join(u) for s, u in spk2utt.items()}}
    if text is not None:
        files["text"] = text
    if segments is not None:
        files["segments"] = segments
    for name, mapping in (spk_files or {}).items():
        kept = {s: v for s, v in mapping.items() if s in spk2utt}
        if kept:
            files[name] = kept
    for name, mapping in files.items():
        write_if_changed(out / name, render_kaldi_map(mapping))
    for stale in [*STALE_FILES, *(p.name for p in out.glob("spk2*"))]:
        if stale not in files and (out / stale).is_file() and ".tmp." not in stale:
            logger.info("removing stale %s", out / stale)
            (out / stale).unlink()
    load_data_dir(out)  # what we wrote must pass validation
    return out


def subset_data_dir(data: DataDir, out_dir: os.PathLike | str, utts: Iterable[str]) -> Path:
    """Write the given utterances of ``data`` (segments, absolute paths and speaker files kept)."""
    utts = sorted(utts, key=lambda k: k.encode())
    segments = None
    if data.segments is not None:
        segs = {u: data.segments[u] for u in utts}
        segments = {u: f"{s.recording} {s.start:g} {s.end:g}" for u, s in segs.items()}
        wav = {s.recording: data.resolve(data.wav_scp[s.recording]) for s in segs.values()}
    else:
        wav = {u: data.resolve(data.wav_scp[u]) for u in utts}
    wav = {k: os.path.abspath(v) for k, v in wav.items()}
    text = {u: data.text[u] for u in utts} if data.text is not None else None
    utt2spk = {u: data.utt2spk[u] for u in utts} if data.utt2spk is not None else None
    return write_data_dir(out_dir, wav, text, utt2spk, speaker_files(data), segments)


def copy_data_dir(src: os.PathLike | str, out_dir: os.PathLike | str) -> Path:
    """Every file of the data dir ``src`` (validated first) copied as they are to ``out_dir``, which it replaces
    (``rm -rf OUT; cp -r SRC OUT``, built beside ``out_dir`` and renamed into place)."""
    data, out = load_data_dir(src), Path(out_dir)
    remove_stale_temps(out.parent, prefix=f"{out.name}.tmp.")
    tmp = out.with_name(f"{out.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(data.path, tmp, symlinks=True, copy_function=shutil.copy)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def evenly_spaced(items: Sequence[str], n: int) -> List[str]:
    """``n`` items spread evenly over ``items`` (first and last included): a subset spanning all speakers."""
    if n < 1:
        raise DataError(f"subset size must be >= 1, got {n}")
    return [items[i] for i in sorted({int(j) for j in np.linspace(0, len(items) - 1, min(n, len(items)))})]
