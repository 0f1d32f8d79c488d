"""Audio reading with soundfile, resampling to 16 kHz and validation.

Stereo, empty, unreadable or non-finite audio is an :class:`AudioError` naming the utterance.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from softtok.tokenizers.datadir import DataDir, DataError, Segment

TARGET_SAMPLE_RATE = 16000


class AudioError(DataError):
    """An utterance's audio cannot be used; the message names the utterance and file."""


def read_audio(path: str, utt: str, segment: Optional[Segment] = None,
               sample_rate: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Read one mono utterance as float32 in [-1, 1], resampled to ``sample_rate``."""
    try:
        info = sf.info(path)
        start = stop = None
        if segment is not None:
            start = int(round(segment.start * info.samplerate))
            stop = int(round(segment.end * info.samplerate))
            if stop > info.frames:
                raise AudioError(f"utterance {utt!r}: segment end {segment.end}s is past the end of {path}")
        wave, sr = sf.read(path, start=start or 0, stop=stop, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise AudioError(f"utterance {utt!r}: cannot read audio {path}: {str(exc).splitlines()[0]}") from None
    if wave.shape[1] != 1:
        raise AudioError(f"utterance {utt!r}: {path} has {wave.shape[1]} channels, expected mono")
    wave = wave[:, 0]
    if wave.size == 0:
        raise AudioError(f"utterance {utt!r}: {path} is empty")
    if not np.isfinite(wave).all():
        raise AudioError(f"utterance {utt!r}: {path} contains NaN or infinite samples")
    tensor = torch.from_numpy(np.ascontiguousarray(wave))
    if sr != sample_rate:
        tensor = AF.resample(tensor, sr, sample_rate)
    return tensor


def read_utterance(data: DataDir, utt: str, sample_rate: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Read an utterance of a data dir (whole file or its segment)."""
    path, segment = data.audio_source(utt)
    return read_audio(path, utt, segment, sample_rate)
