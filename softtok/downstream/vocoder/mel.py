"""The ``mel`` unit vocoder: tokens (50 frames/s) → log-mel (100 frames/s) → Griffin-Lim → 16 kHz waveform.

A small CPU-trainable baseline. Inputs go through the same :class:`TokenEmbedding` as ASR, so a model
trained on hard ids is driven at inference by hard ids, dense soft probabilities or top-k tokens
(continuous-input models take the features themselves).

* Target: log of the magnitude (power 1) Slaney mel spectrogram, 80 bins, n_fft 1024, window 1024,
  hop 160 (10 ms), 0–8000 Hz, floored at 1e-5 (HiFi-GAN's convention). Token frames are 20 ms, so the
  network predicts two mel frames per token frame; token and mel sequences are cropped to
  ``min(2·T_tok, T_mel)`` for the loss.
* Model: embedding → input projection + LayerNorm → residual conv blocks (Conv1d, LayerNorm, GELU,
  dropout) → ×2 upsampling (a linear layer to 2·C channels, reshaped to two frames) → more residual
  blocks → linear to 80 bins. Padding frames are zeroed before every convolution, so an utterance's
  output does not depend on what it is batched with.
* Griffin-Lim: the mel → linear inversion uses the pseudo-inverse of the mel filterbank, clamped ≥ 0.
  torchaudio's ``InverseMelScale`` solves a non-negative least-squares problem by SGD and takes seconds
  per utterance; the pseudo-inverse is one matmul and, after Griffin-Lim, gives speech of the same
  (limited) quality. Then 32 iterations of fast Griffin-Lim (momentum 0.99).

    softtok voc synthesize --exp-dir exp/voc_mel_hard_k128 \\
        --feats dump/whisper/test/feats.scp --out-dir exp/voc_mel_hard_k128/synth_soft_tau2 \\
        --head soft --head-conf '{tau: 2}'
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from softtok.common import run_job, setup_logging
from softtok.downstream.data import ReadOnAccess, ScpFeatures, TokenData, pad_token_inputs
from softtok.downstream.embedding import TokenEmbedding, rename_prefix
from softtok.downstream.training import verify_codebooks
from softtok.tokenizers.audio import (TARGET_SAMPLE_RATE, AudioError, audio_info, read_utterance, utterance_samples,
                                     write_audio)
from softtok.tokenizers.datadir import DataDir, load_data_dir, write_kaldi_map
from softtok.tokenizers.fileio import load_torch, load_yaml, save_yaml
from softtok.tokenizers.heads import Head, TokenInput, add_head_args, build_head, input_sizes
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import as_list

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 160
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0
LOG_FLOOR = 1e-5
UPSAMPLE = 2  # mel frames (10 ms) per token frame (20 ms)
MEL_SETTINGS = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH,
                "n_mels": N_MELS, "f_min": F_MIN, "f_max": F_MAX, "power": 1.0, "mel_scale": "slaney",
                "norm": "slaney", "log_floor": LOG_FLOOR}


def _check_sample_rate(sr: int, name: str) -> None:
    if sr != SAMPLE_RATE:
        raise ValueError(f"{name}: sample rate must be {SAMPLE_RATE} Hz, got {sr}")


@functools.lru_cache(maxsize=None)
def _mel_transform() -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, f_min=F_MIN,
        f_max=F_MAX, n_mels=N_MELS, power=1.0, norm="slaney", mel_scale="slaney")


def log_mel(wave: torch.Tensor | np.ndarray, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """(T_mel, 80) float32 log-mel of a mono 16 kHz waveform; T_mel = 1 + samples // 160."""
    _check_sample_rate(sr, "log_mel")
    wave = torch.as_tensor(np.asarray(wave, dtype=np.float32) if isinstance(wave, np.ndarray) else wave).float()
    if wave.ndim != 1 or wave.numel() == 0:
        raise ValueError(f"log_mel: expected a non-empty mono 1-D waveform, got shape {tuple(wave.shape)}")
    mel = _mel_transform()(wave.cpu())  # (80, T_mel)
    return torch.log(mel.clamp_min(LOG_FLOOR)).T.contiguous()


@functools.lru_cache(maxsize=None)
def _inverse_filterbank() -> torch.Tensor:
    """Pseudo-inverse (n_freqs, n_mels) of the mel filterbank: linear magnitude ≈ pinv @ mel."""
    fb = _mel_transform().mel_scale.fb  # (n_freqs, n_mels)
    return torch.linalg.pinv(fb.T.double()).float()


@functools.lru_cache(maxsize=None)
def _griffin_lim_transform(n_iter: int, momentum: float) -> torchaudio.transforms.GriffinLim:
    return torchaudio.transforms.GriffinLim(n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, power=1.0,
                                            n_iter=n_iter, momentum=momentum, rand_init=False)


def griffin_lim(log_mel_spec: torch.Tensor | np.ndarray, n_iter: int = 32, momentum: float = 0.99) -> torch.Tensor:
    """16 kHz waveform (samples = 160·(T_mel − 1)) of a (T_mel, 80) log-mel: pinv mel inversion + Griffin-Lim."""
    spec = torch.as_tensor(log_mel_spec).detach().float().cpu()
    if spec.ndim != 2 or spec.shape[1] != N_MELS or spec.shape[0] == 0:
        raise ValueError(f"griffin_lim: expected a non-empty (T, {N_MELS}) log-mel, got shape {tuple(spec.shape)}")
    if not torch.isfinite(spec).all():
        raise ValueError("griffin_lim: log-mel contains NaN or infinite values")
    mag = (_inverse_filterbank() @ spec.exp().T).clamp_min(0.0)  # (n_freqs, T_mel)
    with torch.no_grad():
        wave = _griffin_lim_transform(n_iter, momentum)(mag)
    return wave.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------------- model


class ConvBlock(nn.Module):
    """x + dropout(GELU(LayerNorm(Conv1d(x)))) on (B, T, C), padding frames zeroed."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"conv kernel must be odd, got {kernel}")
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.conv((x * mask).transpose(1, 2)).transpose(1, 2)
        return (x + self.dropout(F.gelu(self.norm(y)))) * mask


def check_batched(tokens: TokenInput, lengths: Optional[torch.Tensor] = None) -> None:
    """One-line ValueError for input that is not a batched, non-empty (B, T, …) sequence, or a length ≤ 0 (the
    embedding checks the rest: kind, streams, K, ids, feature dim)."""
    main = tokens.main
    if main.ndim < 2 or main.shape[0] == 0 or main.shape[1] == 0:
        raise ValueError(f"empty token sequence (input shape {tuple(main.shape)}; expected batched (B, T, ...))")
    if lengths is not None and int(lengths.min()) <= 0:
        raise ValueError("empty token sequence")


def _mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return (torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(-1).float()


class MelVocoder(nn.Module):
    """Tokens (B, T) / probs (B, T, K) / top-k / features (B, T, D) → log-mel (B, 2T, n_mels)."""

    def __init__(self, n_tokens: Optional[int] = None, feat_dim: Optional[int] = None, embed_dim: int = 256,
                 channels: int = 256, n_layers: int = 4, n_post_layers: int = 2, kernel: int = 5,
                 n_mels: int = N_MELS, dropout: float = 0.1, l2_weight: float = 0.0):
        super().__init__()
        self.embedding = TokenEmbedding(n_tokens, embed_dim, feat_dim)
        self.n_tokens, self.feat_dim, self.n_mels, self.l2_weight = n_tokens, feat_dim, n_mels, l2_weight
        self.proj = nn.Linear(embed_dim, channels)
        self.in_norm = nn.LayerNorm(channels)
        self.pre = nn.ModuleList(ConvBlock(channels, kernel, dropout) for _ in range(n_layers))
        self.upsample = nn.Linear(channels, UPSAMPLE * channels)
        self.post = nn.ModuleList(ConvBlock(channels, kernel, dropout) for _ in range(n_post_layers))
        self.out = nn.Linear(channels, n_mels)
        nn.init.constant_(self.out.bias, -5.0)  # near the mean log-mel of speech: faster start

    @property
    def kind(self) -> str:
        return self.embedding.kind

    def forward(self, tokens: TokenInput, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mel (B, 2T, n_mels), mel_lengths (B,) = 2·lengths) of batched (B, T, …) input."""
        check_batched(tokens, lengths)
        x = self.in_norm(self.proj(self.embedding(tokens)))  # (B, T, C)
        b, t, c = x.shape
        mask = _mask(lengths, t)
        for block in self.pre:
            x = block(x, mask)
        x = self.upsample(x).reshape(b, t * UPSAMPLE, c)
        mel_lengths = lengths * UPSAMPLE
        mask = _mask(mel_lengths, t * UPSAMPLE)
        for block in self.post:
            x = block(x, mask)
        return self.out(x) * mask, mel_lengths

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        """Checkpoints from before the embedding was called ``embedding`` (``embed.*``) load too."""
        rename_prefix(state_dict, prefix + "embed.", prefix + "embedding.")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def loss(self, mel: torch.Tensor, mel_lengths: torch.Tensor, target: torch.Tensor,
             target_lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        return mel_loss(mel, mel_lengths, target, target_lengths, self.l2_weight)


def mel_loss(mel: torch.Tensor, mel_lengths: torch.Tensor, target: torch.Tensor, target_lengths: torch.Tensor,
             l2_weight: float = 0.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Masked L1 (+ ``l2_weight`` · L2) per mel bin over the first min(predicted, target) frames of each utterance."""
    lengths = torch.minimum(mel_lengths, target_lengths)
    t = min(mel.shape[1], target.shape[1], int(lengths.max()))
    mask = _mask(lengths, t)
    diff = (mel[:, :t] - target[:, :t]) * mask
    denom = mask.sum() * mel.shape[-1]
    l1 = diff.abs().sum() / denom
    l2 = (diff * diff).sum() / denom
    loss = l1 + l2_weight * l2
    return loss, {"loss": loss.item(), "l1": l1.item(), "l2": l2.item()}


# ----------------------------------------------------------------------------------------------- data


class AudioTargets(ReadOnAccess):
    """Per-utterance training targets made from a data dir's audio when accessed; only paths and lengths stay in RAM.

    ``make`` turns the (resampled) waveform into the target and ``length`` gives the target's length from the sample
    count, so lengths for batching and cropping come from ``soundfile.info`` headers without reading any audio.
    :meth:`preload` keeps chosen targets in memory, made exactly as on access, so batches are identical.
    """

    def __init__(self, data: DataDir, utts: Sequence[str], sample_rate: int,
                 make: Callable[[torch.Tensor], torch.Tensor], length: Callable[[int], int],
                 min_native_rate: Optional[int] = None):
        self.data, self.sample_rate, self.make = data, sample_rate, make
        infos: Dict[str, Any] = {}
        self.num_samples = {u: self._num_samples(u, infos, min_native_rate) for u in utts}
        self.lengths = {u: length(n) for u, n in self.num_samples.items()}
        self.index = self.lengths
        self._memory: Dict[str, torch.Tensor] = {}

    def __str__(self) -> str:
        return f"{self.data.path} targets"

    def _num_samples(self, utt: str, infos: Dict[str, Any], min_native_rate: Optional[int]) -> int:
        """The utterance's length in samples at ``sample_rate``, from the file header (one read per file)."""
        path, segment = self.data.audio_source(utt)
        if path not in infos:
            infos[path] = audio_info(path, utt)
        info = infos[path]
        if min_native_rate is not None and info.samplerate < min_native_rate:
            raise AudioError(f"utterance {utt!r}: {path} has sample rate {info.samplerate} Hz; this vocoder needs "
                             f"audio at {min_native_rate} Hz or more (upsampled audio has nothing above "
                             f"{info.samplerate // 2} Hz)")
        return utterance_samples(path, utt, segment, self.sample_rate, info)

    def read(self, utt: str) -> torch.Tensor:
        """The utterance's target, read from its audio file now (checked against the indexed length)."""
        wave = read_utterance(self.data, utt, self.sample_rate)
        if len(wave) != self.num_samples[utt]:
            path, _ = self.data.audio_source(utt)
            raise AudioError(f"utterance {utt!r}: {path} gave {len(wave)} samples, its header promised "
                             f"{self.num_samples[utt]} (file changed since the data was indexed?)")
        return self.make(wave)


class MelVocoderData(TokenData):
    """Features of a feats.scp (heads run on the fly) paired with log-mel targets of a data dir's audio.

    Features and targets are read when a batch is collated (:class:`ScpFeatures`, :class:`AudioTargets`): only
    the index (scp entries, audio paths, lengths) stays in memory unless ``preload`` (features) or
    ``preload_targets``. Token and mel lengths must agree to within 10 % (2 mel frames per token frame), which
    catches features of another frame rate or audio.
    Subclasses change the target (``_make_target``, ``_target_length``, ``frames_per_token``, ``target_unit``).
    """

    frames_per_token = UPSAMPLE  # target frames per 20 ms token frame
    target_unit = "mel frames"
    min_native_rate: Optional[int] = None  # audio recorded below this rate is refused

    def __init__(self, feats_scp: str, data_dir: str, max_frames: Optional[int] = None,
                 sample_rate: int = TARGET_SAMPLE_RATE, preload: bool = False, preload_targets: bool = False):
        _check_sample_rate(sample_rate, f"{data_dir}")
        super().__init__(feats_scp, max_frames, preload)
        if not self.utts:
            raise ValueError(f"{feats_scp}: no utterances (after max_frames={max_frames})")
        data = load_data_dir(data_dir)
        missing = [u for u in self.utts if u not in set(data.utt_ids)]
        if missing:
            raise ValueError(f"{data_dir}: utterance {missing[0]!r} of {feats_scp} has no audio ({len(missing)} missing)")
        empty = [u for u in self.utts if self.num_frames[u] == 0]
        if empty:
            raise ValueError(f"{feats_scp}: utterance {empty[0]!r} has an empty token sequence")
        self.targets = AudioTargets(data, self.utts, sample_rate, self._make_target, self._target_length,
                                    self.min_native_rate)
        for utt in self.utts:
            self._check_length(utt)
        if preload_targets:
            self.targets.preload(self.utts)

    def _make_target(self, wave: torch.Tensor) -> torch.Tensor:
        """The (T_mel, 80) log-mel of one utterance's 16 kHz audio."""
        return log_mel(wave, self.targets.sample_rate)

    def _target_length(self, samples: int) -> int:
        """Log-mel frames of ``samples`` samples (centred STFT)."""
        return 1 + samples // HOP_LENGTH

    def _check_length(self, utt: str) -> None:
        """Token and target lengths must agree to within 10 % (or two token frames)."""
        n_tok, n, per = self.num_frames[utt], self.targets.lengths[utt], self.frames_per_token
        if abs(per * n_tok - n) > max(2 * per, 0.1 * n):
            raise ValueError(f"utterance {utt!r}: {n_tok} token frames but {n} {self.target_unit}; expected "
                             f"{per} {self.target_unit} per token frame (20 ms)")

    def collate(self, utts: Sequence[str], head: Head, tokenizer: Any = None, device: str = "cpu"):
        """(utts, TokenInput, lengths, target log-mels (B, T_mel, 80), target lengths) of one batch."""
        tokens, lengths = self.tokens(utts, head, device)
        mels = [self.targets[u] for u in utts]
        mel_lengths = torch.tensor([len(m) for m in mels], dtype=torch.long)
        target = nn.utils.rnn.pad_sequence(mels, batch_first=True)
        return list(utts), tokens, lengths, target.to(device), mel_lengths.to(device)


# ----------------------------------------------------------------------------------------------- inference


def build_model(config: Dict[str, Any]) -> MelVocoder:
    """Rebuild the model from an experiment's config.yaml contents."""
    return MelVocoder(n_tokens=config.get("n_tokens"), feat_dim=config.get("feat_dim"), **config.get("model", {}))


def load_trained(exp_dir: str | Path, checkpoint: str = "model.pth", device: str = "cpu",
                 build: Callable[[Dict[str, Any]], nn.Module] = build_model):
    """(model in eval mode, config) of a trained experiment; ``build`` rebuilds the model from its config."""
    exp = Path(exp_dir)
    config = load_yaml(exp / "config.yaml")
    model = build(config)
    model.load_state_dict(load_torch(exp / checkpoint, map_location=device))
    return model.to(device).eval(), config


def inference_head(config: Dict[str, Any], head: Optional[str], head_conf: Optional[Dict[str, Any]],
                   kmeans: Optional[str] = None, where: str = "config.yaml") -> Head:
    """The head for synthesis (default: the training head and its options), checked against the model (kind, K, and
    the codebooks' content that ``where``, the config, recorded)."""
    if head is None:
        head, head_conf = config["head"], head_conf or config.get("head_conf") or {}
    discrete = config.get("n_tokens") is not None
    if (head == "continuous") == discrete:
        raise ValueError(f"model was trained with head {config['head']!r} "
                         f"({'tokens' if discrete else 'continuous features'}); it cannot take head {head!r}")
    if not discrete:
        return build_head(head, None, as_list(config.get("feat_dim")), **(head_conf or {}))
    paths = split_list(kmeans or config.get("kmeans"))
    if not paths:
        raise ValueError("a token model needs its k-means codebook (--kmeans)")
    codebooks = [Codebook.load(p) for p in paths]
    the_head = build_head(head, codebooks, **(head_conf or {}))
    n_tokens, _ = input_sizes(the_head, the_head.codebooks.source_dims)
    if n_tokens != config["n_tokens"]:
        raise ValueError(f"codebook {','.join(paths)} has K={n_tokens}, model has K={config['n_tokens']}")
    verify_codebooks(config, codebooks, where)
    return the_head


def dev_mel_error(exp_dir: str, feats: str, data_dir: str, head: Optional[str] = None,
              head_conf: Optional[Dict[str, Any]] = None, data_class: type = MelVocoderData,
              build: Callable[[Dict[str, Any]], nn.Module] = build_model) -> float:
    """Mean over utterances of the L1 between the model's log-mel and that of the audio (``data_class``'s target):
    the τ sweep's criterion that needs no waveform (each utterance alone, as in synthesis)."""
    model, config = load_trained(exp_dir, build=build)
    the_head = inference_head(config, head, head_conf, None, f"{exp_dir}/config.yaml")
    data = data_class(feats, data_dir)
    errors = []
    with torch.no_grad():
        for utt in data.utts:
            _, tokens, lengths, target, target_lengths = data.collate([utt], the_head)
            mel, mel_lengths = model(tokens, lengths)
            errors.append(mel_loss(mel, mel_lengths, target, target_lengths)[0].item())
    return float(np.mean(errors))


def synthesize_waves(render: Callable[[TokenInput, torch.Tensor], torch.Tensor], head: Head, feats: str,
                     out_dir: str | Path, settings: Dict[str, Any], device: str = "cpu",
                     sample_rate: int = SAMPLE_RATE) -> Dict[str, Any]:
    """Write ``<out_dir>/wav/<utt>.wav`` = ``render(tokens, lengths)`` (a batch of one, at ``sample_rate``) for every
    utterance of ``feats`` (a comma list: stacked sources), then ``wav.scp`` and ``synth.yaml`` (``settings``);
    shared by every vocoder's synthesis."""
    out = Path(out_dir)
    wav_scp: Dict[str, str] = {}
    seconds = 0.0
    features = ScpFeatures(feats)
    if head.source_dims is not None and features.dims != head.source_dims:
        raise ValueError(f"{feats}: feature dims {features.dims}, the model reads sources of dims {head.source_dims} "
                         "(one feats.scp per source, comma-separated)")
    with torch.no_grad():
        for utt in sorted(features):  # one utterance in RAM at a time
            matrix = features[utt]
            if len(matrix) == 0:
                raise ValueError(f"{feats}: utterance {utt!r} has an empty token sequence")
            tokens, lengths = pad_token_inputs([head(torch.from_numpy(matrix).to(device))])
            wave = render(tokens, lengths.to(device))
            path = (out / "wav" / f"{utt}.wav").resolve()
            write_audio(path, wave, sample_rate)
            wav_scp[utt] = str(path)
            seconds += len(wave) / sample_rate
    if not wav_scp:
        raise ValueError(f"{feats}: no utterances")
    write_kaldi_map(out / "wav.scp", wav_scp)
    save_yaml(out / "synth.yaml", settings)
    return {"utterances": len(wav_scp), "audio_seconds": round(seconds, 1), "output": str(out / "wav.scp")}


def synth_settings(exp_dir: str, config: Dict[str, Any], feats: str, head: Head,
                   head_conf: Optional[Dict[str, Any]], kmeans: Optional[str]) -> Dict[str, Any]:
    """The ``synth.yaml`` entries every vocoder writes: model, input features and head."""
    return {"exp_dir": str(Path(exp_dir).resolve()), "checkpoint": "model.pth", "feats": str(feats),
            "head": head.name, "head_conf": dict(head_conf or {}), "head_settings": head.settings(),
            "kmeans": kmeans or config.get("kmeans"), "trained_head": config["head"]}


Render = Callable[[TokenInput, torch.Tensor], torch.Tensor]


def mel_renderer(model: nn.Module, to_wave: Callable[[torch.Tensor], torch.Tensor],
                 timers: Optional[Dict[str, float]], wave_timer: str) -> Render:
    """render(tokens, lengths) -> wave of a batch of one: the model's mel, then ``to_wave``; ``timers`` adds up
    network seconds and ``wave_timer`` seconds."""
    timers = timers if timers is not None else {}

    def render(tokens: TokenInput, lengths: torch.Tensor) -> torch.Tensor:
        t1 = time.perf_counter()
        with torch.no_grad():
            mel, _ = model(tokens, lengths)
        t2 = time.perf_counter()
        wave = to_wave(mel[0])
        timers["network_seconds"] = timers.get("network_seconds", 0.0) + t2 - t1
        timers[wave_timer] = timers.get(wave_timer, 0.0) + time.perf_counter() - t2
        return wave

    return render


def load_renderer(exp_dir: str, device: str = "cpu", n_iter: int = 32,
                  timers: Optional[Dict[str, float]] = None) -> Tuple[Render, Dict[str, Any]]:
    """(render(tokens, lengths) -> 16 kHz wave of a batch of one, config) of a trained mel vocoder + Griffin-Lim;
    ``timers`` adds up network and Griffin-Lim seconds."""
    model, config = load_trained(exp_dir, device=device)
    to_wave = functools.partial(griffin_lim, n_iter=n_iter)
    return mel_renderer(model, to_wave, timers, "griffin_lim_seconds"), config


def synthesize(exp_dir: str, feats: str, out_dir: str, head: Optional[str] = None,
               head_conf: Optional[Dict[str, Any]] = None, kmeans: Optional[str] = None, n_iter: int = 32,
               device: str = "cpu") -> Dict[str, Any]:
    """Write ``<out_dir>/wav/<utt>.wav`` (16 kHz), ``wav.scp`` and ``synth.yaml`` for every utterance of ``feats``."""
    t0 = time.perf_counter()
    timers = {"network_seconds": 0.0, "griffin_lim_seconds": 0.0}
    render, config = load_renderer(exp_dir, device, n_iter, timers)
    the_head = inference_head(config, head, head_conf, kmeans, str(Path(exp_dir) / "config.yaml"))
    settings = {**synth_settings(exp_dir, config, feats, the_head, head_conf, kmeans),
                "griffin_lim": {"n_iter": n_iter, "momentum": 0.99, "mel_inverse": "pinv"}, "mel": MEL_SETTINGS}
    summary = synthesize_waves(render, the_head, feats, out_dir, settings, device)
    return {**summary, **{k: round(v, 2) for k, v in timers.items()},
            "seconds": round(time.perf_counter() - t0, 1)}


def add_synthesis_args(p: argparse.ArgumentParser) -> None:
    """The options every vocoder's synthesis CLI shares: experiment, features, output folder, head, device."""
    p.add_argument("--exp-dir", required=True, help="trained experiment (config.yaml, model.pth)")
    p.add_argument("--feats", required=True, help="feats.scp of the utterances to synthesize")
    p.add_argument("--out-dir", required=True)
    add_head_args(p, default=None, shortcuts=False)
    p.add_argument("--kmeans", help="codebook .npy, a comma list for several sources (default: the training ones)")
    p.add_argument("--device", default="cpu")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog,
                                description="Synthesize 16 kHz speech with a trained mel vocoder + Griffin-Lim.")
    add_synthesis_args(p)
    p.add_argument("--n-iter", type=int, default=32, help="Griffin-Lim iterations")
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    return run_job("synthesize", lambda: synthesize(args.exp_dir, args.feats, args.out_dir, args.head,
                                                    args.head_conf, args.kmeans, args.n_iter, args.device), logger)


if __name__ == "__main__":
    raise SystemExit(main())
