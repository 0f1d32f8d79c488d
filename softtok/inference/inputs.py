"""What inference reads: audio files (any format soundfile reads, any sample rate), folders of them, a wav.scp or a
Kaldi data dir, as (key, data dir) items read and resampled to 16 kHz on demand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import soundfile as sf
import torch

from softtok.tokenizers.audio import read_utterance
from softtok.tokenizers.datadir import DataDir, DataError, load_data_dir, read_kaldi_map

AUDIO_SUFFIXES = frozenset(f".{ext.lower()}" for ext in sf.available_formats())


@dataclass(frozen=True)
class AudioItem:
    """One utterance to read: ``key`` in ``data`` (a data dir, a wav.scp's folder, or a file's own one-entry map)."""

    key: str
    data: DataDir

    @property
    def source(self) -> str:
        path, _ = self.data.audio_source(self.key)
        return path

    def read(self, sample_rate: int = 16000) -> torch.Tensor:
        """Mono float32 at ``sample_rate`` (resampled); unreadable, empty or non-audio files are AudioErrors."""
        return read_utterance(self.data, self.key, sample_rate)


def file_key(path: Path, root: Path) -> str:
    """A Kaldi-safe key for an audio file found under ``root``: its relative path without the suffix, no spaces."""
    return re.sub(r"\s+", "_", path.relative_to(root).with_suffix("").as_posix())


def collect_inputs(inputs: Sequence[str]) -> List[AudioItem]:
    """Every utterance the inputs name, in order; a missing input or a key met twice is a one-line error."""
    items: List[AudioItem] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir() and (path / "wav.scp").is_file():
            data = load_data_dir(path)
            items += [AudioItem(u, data) for u in data.utt_ids]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                raise DataError(f"{path}: no audio files in this folder (suffixes soundfile reads: .wav, .flac, ...)")
            items += [_one_file(p, file_key(p, path)) for p in files]
        elif path.is_file() and path.name.endswith(".scp"):
            data = DataDir(path=path.parent, wav_scp=read_kaldi_map(path), segments=None)
            items += [AudioItem(u, data) for u in data.utt_ids]
        elif path.is_file():
            items.append(_one_file(path, re.sub(r"\s+", "_", path.stem)))
        else:
            raise DataError(f"{path}: no such audio file, folder, wav.scp or data dir")
    seen: Dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise DataError(f"key {item.key!r} comes twice ({seen[item.key]} and {item.source}); rename one")
        seen[item.key] = item.source
    return items


def _one_file(path: Path, key: str) -> AudioItem:
    """An audio file as a one-entry map (its absolute path: a relative one would be read against its own folder)."""
    path = path.resolve()
    return AudioItem(key, DataDir(path=path.parent, wav_scp={key: str(path)}, segments=None))
