"""Audio reading with soundfile, resampling to 16 kHz and validation.

Stereo, empty, unreadable or non-finite audio is an :class:`AudioError` naming the utterance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from softtok.tokenizers.datadir import DataDir, DataError, Segment
from softtok.tokenizers.fileio import atomic_path, check_regular_file

TARGET_SAMPLE_RATE = 16000
PEAK_LIMIT = 0.99  # derived audio louder than this is scaled down as a whole (16-bit PCM would clip)


class AudioError(DataError):
    """An utterance's audio cannot be used; the message names the utterance and file."""


def _unreadable(utt: str, path: str, exc: Exception) -> AudioError:
    return AudioError(f"utterance {utt!r}: cannot read audio {path}: {str(exc).splitlines()[0]}")


def audio_info(path: str, utt: str) -> Any:
    """soundfile's header of ``path`` (rate, frames, channels); an unreadable file names the utterance, and a FIFO
    or another non-regular file is refused unopened."""
    try:
        check_regular_file(path, f"utterance {utt!r}")
    except FileNotFoundError:
        pass  # soundfile's error below names it
    except ValueError as exc:
        raise AudioError(str(exc)) from None
    try:
        return sf.info(path)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise _unreadable(utt, path, exc) from None


def _span(info: Any, path: str, utt: str, segment: Optional[Segment]) -> Tuple[int, Optional[int]]:
    """(start, stop) sample of the utterance in its file (stop None: to the end); a segment past the end is an error."""
    if segment is None:
        return 0, None
    start, stop = int(round(segment.start * info.samplerate)), int(round(segment.end * info.samplerate))
    if stop > info.frames:
        raise AudioError(f"utterance {utt!r}: segment end {segment.end}s is past the end of {path}")
    return start, stop


def resampled_length(n: int, orig: int, new: int) -> int:
    """Samples of an ``n``-sample signal after ``torchaudio.functional.resample(orig → new)``, without resampling.

    Mirrors torchaudio's own ``ceil(new·n / orig)`` (rates reduced by their gcd, computed in float32) exactly.
    """
    if orig == new:
        return n
    g = math.gcd(orig, new)
    return int(torch.ceil(torch.as_tensor(new // g * n / (orig // g))))


def utterance_samples(path: str, utt: str, segment: Optional[Segment] = None,
                      sample_rate: int = TARGET_SAMPLE_RATE, info: Any = None) -> int:
    """How many samples :func:`read_audio` returns, from the header alone (``info``: a header already read);
    stereo and empty audio are the errors reading would give."""
    info = info if info is not None else audio_info(path, utt)
    start, stop = _span(info, path, utt, segment)
    if info.channels != 1:
        raise AudioError(f"utterance {utt!r}: {path} has {info.channels} channels, expected mono")
    n = (info.frames if stop is None else stop) - start
    if n <= 0:
        raise AudioError(f"utterance {utt!r}: {path} is empty")
    return resampled_length(n, info.samplerate, sample_rate)


def read_audio(path: str, utt: str, segment: Optional[Segment] = None,
               sample_rate: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Read one mono utterance as float32 in [-1, 1], resampled to ``sample_rate``."""
    start, stop = _span(audio_info(path, utt), path, utt, segment)
    try:
        wave, sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise _unreadable(utt, path, exc) from None
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


def limit_peak(wave: torch.Tensor, limit: float = PEAK_LIMIT) -> Tuple[torch.Tensor, bool]:
    """Scale the whole waveform down if its peak exceeds ``limit`` (keeps SNR, avoids clipping)."""
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    if peak > limit:
        return wave * (limit / peak), True
    return wave, False


def write_audio(path: Path, wave: torch.Tensor | np.ndarray, sample_rate: int = TARGET_SAMPLE_RATE,
                audio_format: str = "WAV") -> None:
    """Mono 16-bit PCM audio (``WAV`` or ``FLAC``), written to a temporary name and renamed."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.asarray(wave, dtype=np.float32), sample_rate, format=audio_format, subtype="PCM_16")
