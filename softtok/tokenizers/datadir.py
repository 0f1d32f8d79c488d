"""Kaldi-style data directories: read, validate by Kaldi's rules, and write atomically.

A data dir holds ``wav.scp`` (utt -> audio path, absolute or relative to the dir),
optional ``text``, ``utt2spk`` and ``segments`` (seg -> recording, start, end in seconds).
Every problem is reported as one :class:`DataError` line naming the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from softtok.tokenizers.fileio import atomic_write_text


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


def read_kaldi_map(path: Path, n_fields: Optional[int] = None, require_sorted: bool = True) -> Dict[str, str]:
    """Read a ``key value...`` file; keys must be unique and (unless told otherwise) sorted bytewise."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    result: Dict[str, str] = {}
    prev: Optional[str] = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                raise DataError(f"{path}:{lineno}: empty line")
            parts = line.split(maxsplit=1)
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
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


def write_kaldi_map(path: os.PathLike | str, mapping: Dict[str, str], sep: str = " ") -> None:
    """Write ``key<sep>value`` lines sorted bytewise by key, atomically."""
    keys = sorted(mapping, key=lambda k: k.encode())
    atomic_write_text(path, "".join(f"{k}{sep}{mapping[k]}\n" for k in keys))


def write_data_dir(path: os.PathLike | str, wav_scp: Dict[str, str], text: Optional[Dict[str, str]] = None,
                   utt2spk: Optional[Dict[str, str]] = None) -> Path:
    """Write a data dir (wav.scp, text, utt2spk, spk2utt); utt2spk defaults to utt -> utt."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_kaldi_map(path / "wav.scp", wav_scp)
    if text is not None:
        write_kaldi_map(path / "text", text)
    utt2spk = utt2spk if utt2spk is not None else {u: u for u in wav_scp}
    write_kaldi_map(path / "utt2spk", utt2spk)
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk, key=lambda k: k.encode()):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    write_kaldi_map(path / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
    return path


def subset_data_dir(src: os.PathLike | str, dest: os.PathLike | str, n_utts: int) -> Path:
    """Copy ``n_utts`` evenly spaced utterances of a data dir (all its per-utt and per-speaker files)."""
    data = load_data_dir(src)
    if data.segments is not None:
        raise DataError(f"{src}: subsetting a data dir with segments is not supported")
    if n_utts < 1:
        raise DataError(f"{src}: subset size must be >= 1, got {n_utts}")
    utts = data.utt_ids
    keep = [utts[i] for i in sorted({int(j) for j in np.linspace(0, len(utts) - 1, min(n_utts, len(utts)))})]
    wav = {u: data.resolve(data.wav_scp[u]) for u in keep}
    out = write_data_dir(dest, wav, {u: data.text[u] for u in keep} if data.text else None,
                         {u: data.utt2spk[u] for u in keep} if data.utt2spk else None)
    speakers = set((data.utt2spk or {u: u for u in keep}).get(u, u) for u in keep)
    for extra in sorted(Path(src).glob("spk2*")):
        if extra.name != "spk2utt":
            table = read_kaldi_map(extra, require_sorted=False)
            write_kaldi_map(out / extra.name, {s: v for s, v in table.items() if s in speakers})
    return out
