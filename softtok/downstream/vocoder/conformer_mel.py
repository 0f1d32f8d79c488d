"""The ``conformer_mel`` unit vocoder: tokens (50 frames/s) → Conformer → HiFi-GAN log-mel (86.13 frames/s) →
a pretrained HiFi-GAN (or Griffin-Lim) → 22,050 Hz speech.

The mel model of :mod:`.mel` sees five convolutions (± 0.2 s) and its Griffin-Lim output has no harmonics; this one
gives each token frame the whole utterance (self-attention) and local shape (a depthwise convolution per block), and
leaves the waveform to a HiFi-GAN trained on natural speech (:mod:`.hifigan_mel`), so the model only has to predict
the mel that generator expects.

* Model: :class:`TokenEmbedding` (hard ids, soft probabilities, top-k or features) → linear + LayerNorm → Conformer
  blocks (½ feed-forward, self-attention, convolution module, ½ feed-forward; Gulati et al. 2020) at the token rate
  → linear interpolation to the mel rate (1.72265625 mel frames per token frame, the same positions for every
  utterance) → residual convolution blocks → linear to 80 bins. Padding is masked in attention and zeroed before
  every convolution, so an utterance's output does not depend on what it is batched with.
* Target and loss: :func:`~.hifigan_mel.hifigan_log_mel` of the 16 kHz recipe audio; masked L1 (:func:`.mel.mel_loss`).
* Training: :mod:`.train` (same options, checkpoints and resumption as the mel vocoder).

    softtok voc train --vocoder conformer_mel --config conf/conformer_cpu.yaml --head hard --kmeans km.npy ...
    softtok voc synthesize --vocoder conformer_mel --exp-dir exp/voc_conformer_mel_hard_k1024 --feats ... \\
        --out-dir ... --head soft --head-conf '{tau: 2}' [--mel-to-wave griffin_lim]
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from softtok.common import run_job, setup_logging
from softtok.downstream.embedding import TokenEmbedding
from softtok.downstream.training import cli_overrides
from softtok.downstream.vocoder import hifigan_mel as H
from softtok.downstream.vocoder import mel as mel_vocoder
from softtok.downstream.vocoder import train as mel_train
from softtok.downstream.vocoder.mel import (ConvBlock, MelVocoderData, Render, _mask, add_synthesis_args,
                                            check_batched, inference_head, load_trained, mel_loss, mel_renderer,
                                            synth_settings, synthesize_waves)
from softtok.tokenizers.audio import TARGET_SAMPLE_RATE, resampled_length
from softtok.tokenizers.heads import TokenInput

logger = logging.getLogger(__name__)

NAME = "conformer_mel"


class ConformerBlock(nn.Module):
    """½ FFN → multi-head self-attention → convolution module → ½ FFN → LayerNorm, on (B, T, C) with padding masked."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"conformer conv kernel must be odd, got {kernel}")
        self.ffn1, self.ffn2 = (nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ffn_dim), nn.SiLU(), nn.Dropout(dropout),
                                              nn.Linear(ffn_dim, dim), nn.Dropout(dropout)) for _ in range(2))
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        # LayerNorm over channels where Conformer has BatchNorm: per frame, so padding never enters the statistics
        self.conv_post = nn.Sequential(nn.LayerNorm(dim), nn.SiLU(), nn.Linear(dim, dim), nn.Dropout(dropout))
        self.out_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, T, 1) 1 on frames; ``padding`` (B, T) True on padding (attention's key mask)."""
        x = (x + 0.5 * self.ffn1(x)) * mask
        y = self.attn_norm(x)
        y, _ = self.attn(y, y, y, key_padding_mask=padding, need_weights=False)
        x = (x + self.dropout(y)) * mask
        y = nn.functional.glu(self.pointwise_in(self.conv_norm(x).transpose(1, 2)), dim=1)
        y = self.depthwise(y * mask.transpose(1, 2)).transpose(1, 2)
        x = (x + self.conv_post(y)) * mask
        x = x + 0.5 * self.ffn2(x)
        return self.out_norm(x) * mask


def interpolate_frames(x: torch.Tensor, lengths: torch.Tensor, rate: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation of (B, T, C) frames to ``rate`` × as many (frame centres aligned), each utterance within
    its own length: ((B, T', C), lengths') with lengths' = :func:`~.hifigan_mel.mel_frames_of_tokens`."""
    out_lengths = torch.tensor([H.mel_frames_of_tokens(int(n)) for n in lengths], dtype=torch.long,
                               device=lengths.device)
    t_out = int(out_lengths.max())
    pos = (torch.arange(t_out, device=x.device, dtype=torch.float32) + 0.5) / rate - 0.5  # (T',)
    last = (lengths - 1).to(x.device).float()[:, None]  # (B, 1)
    pos = torch.minimum(pos[None, :].clamp_min(0.0), last)  # (B, T')
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, last.long())
    weight = (pos - lo.float()).unsqueeze(-1)
    gather = lambda idx: torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # noqa: E731
    return gather(lo) * (1 - weight) + gather(hi) * weight, out_lengths


class ConformerMelVocoder(nn.Module):
    """Tokens (B, T) / probs (B, T, K) / top-k / features (B, T, D) → HiFi-GAN log-mel (B, ≈1.72·T, 80)."""

    def __init__(self, n_tokens: Optional[int] = None, feat_dim: Optional[int] = None, embed_dim: int = 256,
                 dim: int = 256, n_heads: int = 4, ffn_dim: int = 1024, n_layers: int = 4, conv_kernel: int = 15,
                 n_post_layers: int = 2, post_kernel: int = 5, dropout: float = 0.1, n_mels: int = H.N_MELS):
        super().__init__()
        self.embedding = TokenEmbedding(n_tokens, embed_dim, feat_dim)
        self.n_tokens, self.feat_dim, self.n_mels = n_tokens, feat_dim, n_mels
        self.proj = nn.Sequential(nn.Linear(embed_dim, dim), nn.LayerNorm(dim), nn.Dropout(dropout))
        self.blocks = nn.ModuleList(ConformerBlock(dim, n_heads, ffn_dim, conv_kernel, dropout)
                                    for _ in range(n_layers))
        self.post = nn.ModuleList(ConvBlock(dim, post_kernel, dropout) for _ in range(n_post_layers))
        self.out = nn.Linear(dim, n_mels)
        nn.init.constant_(self.out.bias, -6.0)  # near the mean HiFi-GAN log-mel of speech: a faster start

    @property
    def kind(self) -> str:
        return self.embedding.kind

    def forward(self, tokens: TokenInput, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(log-mel (B, T_mel, n_mels), mel lengths (B,)) of batched (B, T, …) input."""
        check_batched(tokens, lengths)
        x = self.proj(self.embedding(tokens))
        mask = _mask(lengths, x.shape[1])
        padding = mask[..., 0] == 0
        for block in self.blocks:
            x = block(x, mask, padding)
        x, mel_lengths = interpolate_frames(x, lengths, H.FRAMES_PER_TOKEN)
        mask = _mask(mel_lengths, x.shape[1])
        x = x * mask
        for block in self.post:
            x = block(x, mask)
        return self.out(x) * mask, mel_lengths

    def loss(self, mel: torch.Tensor, mel_lengths: torch.Tensor, target: torch.Tensor,
             target_lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        return mel_loss(mel, mel_lengths, target, target_lengths)


class HiFiGANMelData(MelVocoderData):
    """Features of a feats.scp paired with HiFi-GAN log-mel targets (22,050 Hz, hop 256) of 16 kHz recipe audio."""

    frames_per_token = H.FRAMES_PER_TOKEN

    def _make_target(self, wave: torch.Tensor) -> torch.Tensor:
        return H.hifigan_log_mel(wave, self.targets.sample_rate)

    def _target_length(self, samples: int) -> int:
        return H.mel_frames(resampled_length(samples, TARGET_SAMPLE_RATE, H.SAMPLE_RATE))


def build_model(config: Dict[str, Any]) -> ConformerMelVocoder:
    """Rebuild the model from an experiment's config.yaml contents."""
    return ConformerMelVocoder(n_tokens=config.get("n_tokens"), feat_dim=config.get("feat_dim"),
                               **config.get("model", {}))


dev_mel_error = functools.partial(mel_vocoder.dev_mel_error, data_class=HiFiGANMelData, build=build_model)
KIND = mel_train.MelModelKind(NAME, HiFiGANMelData, build_model,
                              {"mel": H.MEL_SETTINGS, "sample_rate": H.SAMPLE_RATE, "mel_to_wave": "hifigan"})


def train(config_path: str, feats: str, data_dir: str, exp_dir: str, head: str = "hard", kmeans: Optional[str] = None,
          head_conf: Optional[Dict[str, Any]] = None, overrides: Optional[Dict[str, Any]] = None,
          valid_feats: Optional[str] = None, valid_data: Optional[str] = None,
          device: Optional[str] = None) -> Dict[str, Any]:
    """Train (or resume) one experiment with :mod:`.train` and write ``model.pth``."""
    return mel_train.train(config_path, feats, data_dir, exp_dir, head, kmeans, head_conf, overrides, valid_feats,
                           valid_data, device, KIND)


def load_renderer(exp_dir: str, device: str = "cpu", timers: Optional[Dict[str, float]] = None,
                  mel_to_wave: Optional[str] = None) -> Tuple[Render, Dict[str, Any]]:
    """(render(tokens, lengths) -> 22,050 Hz wave of a batch of one, config); ``mel_to_wave`` overrides the
    config's stage (hifigan, hifigan_lj, griffin_lim); ``timers`` adds up network and mel-to-wave seconds."""
    model, config = load_trained(exp_dir, device=device, build=build_model)
    stage = H.mel_to_wave(mel_to_wave or config.get("mel_to_wave", "hifigan"), device)
    config = {**config, "sample_rate": H.SAMPLE_RATE}
    return mel_renderer(model, stage, timers, "mel_to_wave_seconds"), config


def synthesize(exp_dir: str, feats: str, out_dir: str, head: Optional[str] = None,
               head_conf: Optional[Dict[str, Any]] = None, kmeans: Optional[str] = None, device: str = "cpu",
               mel_to_wave: Optional[str] = None) -> Dict[str, Any]:
    """Write ``<out_dir>/wav/<utt>.wav`` (22,050 Hz), ``wav.scp`` and ``synth.yaml`` for every utterance of ``feats``."""
    t0 = time.perf_counter()
    timers = {"network_seconds": 0.0, "mel_to_wave_seconds": 0.0}
    render, config = load_renderer(exp_dir, device, timers, mel_to_wave)
    the_head = inference_head(config, head, head_conf, kmeans, f"{exp_dir}/config.yaml")
    settings = {**synth_settings(exp_dir, config, feats, the_head, head_conf, kmeans), "vocoder": NAME,
                **H.stage_settings(mel_to_wave or config.get("mel_to_wave", "hifigan"))}
    summary = synthesize_waves(render, the_head, feats, out_dir, settings, device, H.SAMPLE_RATE)
    return {**summary, **{k: round(v, 2) for k, v in timers.items()}, "seconds": round(time.perf_counter() - t0, 1)}


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """``train`` (the mel vocoder's training options) and ``synthesize`` subcommands."""
    p = argparse.ArgumentParser(prog=prog, description="Conformer token -> HiFi-GAN mel vocoder (pretrained HiFi-GAN "
                                                       "or Griffin-Lim at synthesis): 22.05 kHz speech.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("train", parents=[mel_train.build_parser()], conflict_handler="resolve",
                   help="train (or resume) from a YAML config",
                   description="Train (or resume) a Conformer token -> HiFi-GAN mel model from a YAML config.")
    s = sub.add_parser("synthesize", help="synthesize 22.05 kHz wavs with a trained model",
                       description="Synthesize 22.05 kHz speech with a trained Conformer mel model.")
    add_synthesis_args(s)
    s.add_argument("--mel-to-wave", choices=H.MEL_TO_WAVE, help="mel -> wave stage (default: the model's, hifigan)")
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    if args.command == "train":
        return run_job("train", lambda: train(args.config, args.feats, args.data_dir, args.exp_dir, args.head,
                                              args.kmeans, args.head_conf, cli_overrides(args), args.valid_feats,
                                              args.valid_data, args.device), logger)
    return run_job("synthesize", lambda: synthesize(args.exp_dir, args.feats, args.out_dir, args.head, args.head_conf,
                                                    args.kmeans, args.device, args.mel_to_wave), logger)


if __name__ == "__main__":
    raise SystemExit(main())
