"""Kaldi-compatible MFCC and filterbank features (torchaudio.compliance.kaldi)."""

from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from softtok.tokenizers.features.base import Featurizer, register_featurizer

_INT16_SCALE = 32768.0  # Kaldi works on 16-bit sample values
_WINDOW = 400  # 25 ms at 16 kHz: shorter input has no frame


def _no_frames(wave_16k: torch.Tensor, dim: int) -> torch.Tensor | None:
    """An empty (0, dim) result for input shorter than one window (Kaldi would assert)."""
    return torch.zeros(0, dim) if wave_16k.numel() < _WINDOW else None


def _cmn(feats: torch.Tensor) -> torch.Tensor:
    """Per-utterance cepstral mean normalisation."""
    return feats - feats.mean(dim=0, keepdim=True)


@register_featurizer("mfcc")
class MFCC(Featurizer):
    """Kaldi MFCC; with deltas (default) 13 + Δ + ΔΔ = 39 dims, as fairseq's simple_kmeans."""

    name = "mfcc"
    frame_rate = 100.0

    def __init__(self, num_ceps: int = 13, num_mel_bins: int = 23, deltas: bool = True,
                 cmn: bool = False, device: str = "cpu"):
        self.num_ceps, self.num_mel_bins, self.deltas, self.cmn = num_ceps, num_mel_bins, deltas, cmn
        self.dim = num_ceps * (3 if deltas else 1)

    def __call__(self, wave_16k: torch.Tensor) -> torch.Tensor:
        empty = _no_frames(wave_16k, self.dim)
        if empty is not None:
            return empty
        feats = kaldi.mfcc(wave_16k.view(1, -1) * _INT16_SCALE, sample_frequency=16000.0,
                           num_ceps=self.num_ceps, num_mel_bins=self.num_mel_bins, dither=0.0)
        if self.deltas:
            d1 = AF.compute_deltas(feats.T)
            d2 = AF.compute_deltas(d1)
            feats = torch.cat([feats.T, d1, d2], dim=0).T
        return (_cmn(feats) if self.cmn else feats).contiguous()

    def spec(self):
        return {**super().spec(), "num_ceps": self.num_ceps, "num_mel_bins": self.num_mel_bins,
                "deltas": self.deltas, "cmn": self.cmn}


@register_featurizer("fbank")
class Fbank(Featurizer):
    """Kaldi log-mel filterbank (80 bins by default)."""

    name = "fbank"
    frame_rate = 100.0

    def __init__(self, num_mel_bins: int = 80, cmn: bool = False, device: str = "cpu"):
        self.num_mel_bins, self.cmn = num_mel_bins, cmn
        self.dim = num_mel_bins

    def __call__(self, wave_16k: torch.Tensor) -> torch.Tensor:
        empty = _no_frames(wave_16k, self.dim)
        if empty is not None:
            return empty
        feats = kaldi.fbank(wave_16k.view(1, -1) * _INT16_SCALE, sample_frequency=16000.0,
                            num_mel_bins=self.num_mel_bins, dither=0.0)
        return (_cmn(feats) if self.cmn else feats).contiguous()

    def spec(self):
        return {**super().spec(), "num_mel_bins": self.num_mel_bins, "cmn": self.cmn}
