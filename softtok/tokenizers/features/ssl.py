"""Self-supervised speech encoders (HuBERT, WavLM, wav2vec 2.0) as frame featurizers.

Checkpoints (fairseq/unilm ``.pt`` files, Hugging Face model dirs) load into torchaudio's ``Wav2Vec2Model``
by :mod:`.ssl_checkpoint`, with neither fairseq nor transformers. Features are the output of transformer layer
``layer`` (1-based, fairseq's ``output_layer``), without the encoder's final layer norm; the waveform is
normalised to zero mean and unit variance when the checkpoint says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from softtok.common import default_device
from softtok.tokenizers.features.base import Featurizer, check_layer, register_featurizer
from softtok.tokenizers.features.ssl_checkpoint import load_ssl_model

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class SSLFeaturizer(Featurizer):
    """Output of transformer layer ``layer`` (1-based) of an SSL encoder, (T, dim) at 50 frames/s."""

    name = ""
    frame_rate = 50.0

    def __init__(self, checkpoint: Optional[str] = None, layer: int = 6, device: Optional[str] = None):
        path = self._checkpoint_path(checkpoint)
        loaded = load_ssl_model(path)
        if loaded.kind != self.name and (loaded.kind is not None or self.name == "wavlm"):
            raise ValueError(f"{path}: holds a {loaded.kind or 'non-WavLM'} model, not {self.name}")
        num_layers = loaded.arch["num_layers"]
        self.checkpoint, self.normalize = str(path), loaded.normalize
        self.layer = check_layer(layer, num_layers, str(path))
        self.conv_layers = loaded.arch["conv_layers"]
        self.dim = loaded.arch["dim"]
        self.frame_rate = SAMPLE_RATE / math.prod(stride for _, _, stride in self.conv_layers)
        self.padded_batches = loaded.arch["extractor_mode"] == "layer_norm"
        self.device = torch.device(device or default_device())
        del loaded.model.encoder.transformer.layers[self.layer:]  # layers past `layer` are never run
        self.model = loaded.model.to(self.device).eval()
        logger.info("%s: %s, %d/%d layers, dim %d, normalize=%s, on %s", path, self.name, self.layer, num_layers,
                    self.dim, self.normalize, self.device)

    def num_frames(self, num_samples: int) -> int:
        """Frames the conv extractor yields for ``num_samples`` samples (0 when too short)."""
        for _, kernel, stride in self.conv_layers:
            num_samples = (num_samples - kernel) // stride + 1 if num_samples >= kernel else 0
        return max(num_samples, 0)

    def _wave(self, wave_16k: torch.Tensor) -> torch.Tensor:
        """Mono float32 (S,), normalised over the utterance when the checkpoint asks for it."""
        wave = torch.as_tensor(wave_16k)
        if wave.dim() == 2 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.dim() != 1:
            raise ValueError(f"{self.name}: expected a mono waveform (S,), got shape {tuple(wave.shape)}")
        wave = wave.float()
        return F.layer_norm(wave, wave.shape) if self.normalize and wave.numel() else wave

    @classmethod
    def _checkpoint_path(cls, checkpoint: Optional[str]) -> Path:
        """The resolved checkpoint path; none given is a one-line error."""
        if not checkpoint:
            raise ValueError(f"feature {cls.name!r} needs a checkpoint (fairseq .pt file or Hugging Face model dir)")
        return Path(checkpoint).expanduser().resolve()

    @classmethod
    def count_layers(cls, checkpoint: Optional[str]) -> int:
        """Transformer layers of an SSL checkpoint (HF dir or fairseq .pt)."""
        return int(load_ssl_model(cls._checkpoint_path(checkpoint)).arch["num_layers"])

    def _forward(self, waves: torch.Tensor, lengths: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Layer ``self.layer`` output (B, T, dim) and valid frame counts (None without ``lengths``)."""
        outputs, frames = self._forward_layers(waves, lengths)
        return outputs[-1], frames

    def _forward_layers(self, waves: torch.Tensor, lengths: Optional[torch.Tensor]
                        ) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
        """Outputs (B, T, dim) of layers 1..``self.layer`` and valid frame counts."""
        if self.name == "wavlm":
            return self._wavlm_forward(waves, lengths)
        return self.model.extract_features(waves, lengths, num_layers=self.layer)

    def _wavlm_forward(self, waves: torch.Tensor, lengths: Optional[torch.Tensor]
                       ) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
        """WavLM layers by hand: torchaudio's Encoder passes the padding mask as ``attention_mask``,
        which WavLMSelfAttention rejects; it takes it as ``key_padding_mask``."""
        x, frames = self.model.feature_extractor(waves, lengths)
        x = self.model.encoder.feature_projection(x)
        key_mask = None
        if frames is not None:
            pad = torch.arange(x.shape[1], device=x.device)[None] >= frames[:, None]
            x = x.masked_fill(pad[..., None], 0.0)
            key_mask = torch.zeros(pad.shape, dtype=x.dtype, device=x.device).masked_fill(pad, float("-inf"))
        transformer = self.model.encoder.transformer
        x, bias, outputs = transformer._preprocess(x), None, []
        for layer in transformer.layers[: self.layer]:
            x, bias = layer(x, position_bias=bias, key_padding_mask=key_mask)
            outputs.append(x)
        return outputs, frames

    def __call__(self, wave_16k: torch.Tensor) -> torch.Tensor:
        return self.layer_outputs(wave_16k)[-1]

    def layer_outputs(self, wave_16k: torch.Tensor) -> List[torch.Tensor]:
        """Outputs (T, dim) of layers 1..``self.layer`` of one waveform, in one pass."""
        wave = self._wave(wave_16k)
        if self.num_frames(wave.numel()) == 0:
            return [torch.zeros(0, self.dim)] * self.layer
        with torch.inference_mode():
            outputs, _ = self._forward_layers(wave[None].to(self.device), None)
        return [o[0].float().cpu() for o in outputs]

    def batch(self, waves: List[torch.Tensor]) -> List[torch.Tensor]:
        """One padded forward pass with lengths (attention masking), outputs trimmed to each
        utterance's frames. Only for layer-norm conv extractors (large models): the group-norm
        extractor of base models normalises each channel over all samples, padding included,
        so padding would change the features; those run one utterance at a time."""
        if not self.padded_batches or len(waves) < 2:
            return [self(w) for w in waves]
        prepared = [self._wave(w) for w in waves]
        out = [torch.zeros(0, self.dim) for _ in prepared]
        keep = [i for i, w in enumerate(prepared) if self.num_frames(w.numel()) > 0]
        if not keep:
            return out
        padded = torch.nn.utils.rnn.pad_sequence([prepared[i] for i in keep], batch_first=True)
        lengths = torch.tensor([prepared[i].numel() for i in keep], device=self.device)
        with torch.inference_mode():
            feats, frames = self._forward(padded.to(self.device), lengths)
        for j, i in enumerate(keep):
            out[i] = feats[j, : int(frames[j])].float().cpu()
        return out

    def spec(self):
        return {**super().spec(), "layer": self.layer, "checkpoint": self.checkpoint}


@register_featurizer("hubert")
class HuBERT(SSLFeaturizer):
    """HuBERT (fairseq .pt or HF dir)."""

    name = "hubert"


@register_featurizer("wavlm")
class WavLM(SSLFeaturizer):
    """WavLM (microsoft/unilm .pt or HF dir)."""

    name = "wavlm"


@register_featurizer("wav2vec2")
class Wav2Vec2(SSLFeaturizer):
    """wav2vec 2.0 / XLS-R (fairseq .pt or HF dir)."""

    name = "wav2vec2"
