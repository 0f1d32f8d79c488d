"""Audio reading with soundfile, resampling to 16 kHz and validation.

Stereo, empty, truncated, unreadable or non-finite audio is an :class:`AudioError` naming the utterance.
"""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from softtok.tokenizers.datadir import DataDir, DataError, Segment
from softtok.tokenizers.fileio import atomic_path, check_regular_file

TARGET_SAMPLE_RATE = 16000
PEAK_LIMIT = 0.99  # derived audio louder than this is scaled down as a whole (16-bit PCM would clip)
# torchaudio's sinc resampler builds a (new, orig + 2·width) kernel of the rates reduced by their gcd: a few
# hundred thousand values for the usual rates (8, 11.025, 22.05, 44.1, 48 kHz), gigabytes for a rate sharing no
# factor with 16 kHz (44,101 Hz: 16000 × 44135). Past this many kernel values, scipy's polyphase filter is used.
MAX_SINC_KERNEL = 1 << 20
# libsndfile's header log: a sample-data chunk the header declares longer than the file holds ("should be" less).
_SHORT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_LENGTH = (0xFFFFFFFF, 0x7FFFFFFF)  # streaming writers' placeholders for "to the end of the file"


class AudioError(DataError):
    """An utterance's audio cannot be used; the message names the utterance and file."""


def _unreadable(utt: str, path: str, exc: Exception) -> AudioError:
    return AudioError(f"utterance {utt!r}: cannot read audio {path}: {str(exc).splitlines()[0]}")


def audio_info(path: str, utt: str) -> Any:
    """soundfile's header of ``path`` (rate, frames, channels); an unreadable or truncated file names the utterance,
    and a FIFO or another non-regular file is refused unopened."""
    try:
        check_regular_file(path, f"utterance {utt!r}")
    except FileNotFoundError:
        pass  # soundfile's error below names it
    except ValueError as exc:
        raise AudioError(str(exc)) from None
    try:
        info = sf.info(path)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise _unreadable(utt, path, exc) from None
    for chunk, declared, present in _SHORT_CHUNK.findall(info.extra_info or ""):
        if int(declared) > int(present) and int(declared) not in _UNKNOWN_LENGTH:
            raise AudioError(f"utterance {utt!r}: {path} is truncated: its header declares {declared} bytes of "
                             f"samples ('{chunk}'), the file holds {present}")
    return info


def _span(info: Any, path: str, utt: str, segment: Optional[Segment]) -> Tuple[int, Optional[int]]:
    """(start, stop) sample of the utterance in its file (stop None: to the end); a segment past the end is an error."""
    if segment is None:
        return 0, None
    start, stop = int(round(segment.start * info.samplerate)), int(round(segment.end * info.samplerate))
    if stop > info.frames:
        raise AudioError(f"utterance {utt!r}: segment end {segment.end}s is past the end of {path}")
    return start, stop


def sinc_kernel_size(orig: int, new: int) -> int:
    """Values of the kernel ``torchaudio.functional.resample(orig → new)`` builds (its defaults: 6 zero crossings,
    rolloff 0.99): ``new' × (orig' + 2·width)`` for the rates reduced by their gcd."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    width = math.ceil(6 * orig / (min(orig, new) * 0.99))
    return new * (orig + 2 * width)


def uses_sinc(orig: int, new: int) -> bool:
    """Whether :func:`resample` takes torchaudio's sinc kernel (small for the usual rates) rather than scipy's."""
    return sinc_kernel_size(orig, new) <= MAX_SINC_KERNEL


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """A mono float32 waveform from ``orig`` Hz to ``new`` Hz.

    torchaudio's windowed-sinc resampler where its kernel is small (every usual rate: results stay those of earlier
    versions); otherwise ``scipy.signal.resample_poly``, a polyphase FIR with the exact ratio new/orig, whose filter
    has ~20·max(new', orig') taps but costs ~20·max/new' multiply-adds per output sample (44,101 Hz or 8,001 Hz →
    16 kHz: 0.1 to 0.2 s per second of audio on a busy 2-core machine, where the sinc kernel would take
    gigabytes). scipy is already a dependency (of scikit-learn); soxr would also do, but is only a transitive
    dependency of espnet's librosa.
    """
    if orig == new:
        return wave
    if uses_sinc(orig, new):
        return AF.resample(wave, orig, new)
    from scipy.signal import resample_poly

    g = math.gcd(orig, new)
    out = resample_poly(wave.detach().cpu().float().numpy(), new // g, orig // g)  # float32 in, float32 out
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def resampled_length(n: int, orig: int, new: int) -> int:
    """Samples of an ``n``-sample signal after :func:`resample` (``orig → new``), without resampling.

    torchaudio's ``ceil(new·n / orig)`` (rates reduced by their gcd, computed in float32) exactly where it resamples,
    else scipy's exact integer ``ceil(n·new' / orig')``.
    """
    if orig == new:
        return n
    g = math.gcd(orig, new)
    if not uses_sinc(orig, new):
        return -(-n * (new // g) // (orig // g))
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


def read_audio(path: str, utt: str, segment: Optional[Segment] = None, sample_rate: int = TARGET_SAMPLE_RATE,
               max_samples: Optional[int] = None) -> torch.Tensor:
    """Read one mono utterance as float32 in [-1, 1], resampled to ``sample_rate``.

    ``max_samples`` (at ``sample_rate``: what a featurizer takes at most) refuses a longer utterance from its header,
    before it is read. Fewer samples than the header promised (a truncated file) is an error, never half an utterance.
    """
    info = audio_info(path, utt)
    start, stop = _span(info, path, utt, segment)
    if max_samples is not None:
        n = utterance_samples(path, utt, segment, sample_rate, info)
        if n > max_samples:
            raise AudioError(f"utterance {utt!r}: {n / sample_rate:.1f} s of audio ({path}) is longer than the "
                             f"{max_samples / sample_rate:.1f} s the features take; cut it into segments")
    try:
        wave, sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise _unreadable(utt, path, exc) from None
    if wave.shape[1] != 1:
        raise AudioError(f"utterance {utt!r}: {path} has {wave.shape[1]} channels, expected mono")
    expected = (info.frames if stop is None else stop) - start
    if len(wave) < expected:
        raise AudioError(f"utterance {utt!r}: {path} is truncated: {len(wave)} of the {expected} samples its header "
                         "declares could be read")
    wave = wave[:, 0]
    if wave.size == 0:
        raise AudioError(f"utterance {utt!r}: {path} is empty")
    if not np.isfinite(wave).all():
        raise AudioError(f"utterance {utt!r}: {path} contains NaN or infinite samples")
    return resample(torch.from_numpy(np.ascontiguousarray(wave)), sr, sample_rate)


def read_utterance(data: DataDir, utt: str, sample_rate: int = TARGET_SAMPLE_RATE,
                   max_samples: Optional[int] = None) -> torch.Tensor:
    """Read an utterance of a data dir (whole file or its segment); ``max_samples``: see :func:`read_audio`."""
    path, segment = data.audio_source(utt)
    return read_audio(path, utt, segment, sample_rate, max_samples)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads (per-utterance audio work), then restore the setting.

    On a busy CPU one thread is far faster for tensors of one utterance: 22.05 -> 16 kHz resampling of a 2 s clip
    took 0.16 s CPU on two contended threads and 2 ms on one (bench/NOISE_MIXING.md: the noise mixing).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
