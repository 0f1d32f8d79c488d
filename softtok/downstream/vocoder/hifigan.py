"""The ``hifigan`` unit vocoder: tokens (50 frames/s) → HiFi-GAN generator → 16 kHz waveform (320 samples a frame).

The generator's input layer is the shared :class:`TokenEmbedding`, so a model trained on hard ids is driven
at inference by hard ids, dense soft probabilities or top-k tokens (continuous-input models take the
features through its linear form). The upsampling generator, the multi-scale + multi-period
discriminator and the losses are espnet2's (``espnet2.gan_tts.hifigan``); the upsample scales must
multiply to 320. Training follows HiFi-GAN: random fixed-length crops (``segment_frames`` token frames)
per utterance, LSGAN, generator loss 45·mel L1 + 2·feature matching + 1·adversarial, AdamW
(β = 0.8, 0.99) with an exponential learning-rate decay per epoch.

    softtok voc train --vocoder hifigan --config conf/hifigan_gpu.yaml \\
        --feats dump/whisper/train/feats.scp --data-dir data/train \\
        --kmeans exp/kmeans_k128.npy --head hard --exp-dir exp/voc_hifigan_hard_k128
    softtok voc synthesize --vocoder hifigan --exp-dir exp/voc_hifigan_hard_k128 \\
        --feats dump/whisper/test/feats.scp --out-dir exp/voc_hifigan_hard_k128/synth_soft_tau2 \\
        --head soft --head-conf '{tau: 2}'

``exp_dir`` gets ``train.log``, ``config.yaml``, ``checkpoints/epoch<N>.pth`` (generator, discriminator, both
optimizers and schedulers), ``history.yaml`` and ``model.pth``: the generator weights averaged over the
``keep_nbest`` epochs of lowest validation mel L1 (default 1: the best epoch). Under
``torchrun --nproc_per_node N`` it trains data-parallel (:mod:`softtok.downstream.distributed`; see :func:`_train_step`).
Training audio and features are read when a batch is made (:class:`WaveVocoderData`): only their index stays in RAM.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from espnet2.gan_tts.hifigan import HiFiGANGenerator, HiFiGANMultiScaleMultiPeriodDiscriminator
from espnet2.gan_tts.hifigan.loss import (DiscriminatorAdversarialLoss, FeatureMatchLoss, GeneratorAdversarialLoss,
                                          MelSpectrogramLoss)
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import default_device, prefetch, run_job, setup_logging
from softtok.downstream import distributed
from softtok.downstream.data import pad_token_inputs
from softtok.downstream.embedding import TokenEmbedding, rename_prefix
from softtok.downstream.training import (EpochCheckpoints, cli_overrides, init_embedding, load_codebooks,
                                        load_run_config, optimizer_step, save_run_config)
from softtok.downstream.vocoder import train as mel_train
from softtok.downstream.vocoder.mel import (SAMPLE_RATE, MelVocoderData, Render, add_synthesis_args, check_batched,
                                            inference_head, load_trained, synth_settings, synthesize_waves)
from softtok.tokenizers.heads import Head, TokenInput, build_head

logger = logging.getLogger(__name__)

HOP = 320  # samples per 20 ms token frame at 16 kHz
GENERATOR_DEFAULTS: Dict[str, Any] = {  # the unit HiFi-GAN of Polyak et al. (2021), 16 kHz, 50 Hz units
    "channels": 512, "kernel_size": 7, "upsample_scales": [5, 4, 4, 2, 2],
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}
MEL_LOSS_DEFAULTS: Dict[str, Any] = {"fs": SAMPLE_RATE, "n_fft": 1024, "hop_length": 256, "win_length": 1024,
                                     "n_mels": 80, "fmin": 0, "fmax": None, "log_base": None}
DEFAULTS: Dict[str, Any] = {
    "seed": 0, "max_epoch": 100, "batch_size": 16, "segment_frames": 32, "segments_per_utt": 1,
    "lr": 2e-4, "betas": [0.8, 0.99], "weight_decay": 0.01, "lr_decay": 0.999, "grad_clip": 1000.0,
    "lambda_mel": 45.0, "lambda_feat_match": 2.0, "lambda_adv": 1.0, "mel_loss": {},
    "keep_nbest": 1, "max_valid_utts": 20, "embed_init": "random", "model": {}, "discriminator": {},
    "preload_feats": False, "preload_targets": False,
    "prefetch_batches": 0,  # > 0: crop that many batches ahead in a thread (GPU configs: reading overlaps steps)
}


# ----------------------------------------------------------------------------------------------- model


class UnitHiFiGAN(nn.Module):
    """Tokens (B, T) / probs (B, T, K) / top-k / features (B, T, D) → TokenEmbedding → HiFi-GAN → (B, 320·T)."""

    def __init__(self, n_tokens: Optional[int] = None, feat_dim: Optional[int] = None, embed_dim: int = 128,
                 **generator: Any):
        super().__init__()
        conf = {**GENERATOR_DEFAULTS, **generator}
        conf.setdefault("upsample_kernel_sizes", [2 * s for s in conf["upsample_scales"]])
        _check_generator(conf)
        self.embedding = TokenEmbedding(n_tokens, embed_dim, feat_dim)
        self.n_tokens, self.feat_dim = n_tokens, feat_dim
        with _quiet_weight_norm():
            self.generator = HiFiGANGenerator(in_channels=embed_dim, out_channels=1, **conf)

    @property
    def kind(self) -> str:
        return self.embedding.kind

    def forward(self, tokens: TokenInput) -> torch.Tensor:
        """Waveform (B, 320·T) in [-1, 1] of batched, equal-length (B, T, …) input."""
        check_batched(tokens)
        return self.generator(self.embedding(tokens).transpose(1, 2)).squeeze(1)

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        """Checkpoints from before the embedding was called ``embedding`` (``embed.*``) load too."""
        rename_prefix(state_dict, prefix + "embed.", prefix + "embedding.")
        super()._load_from_state_dict(state_dict, prefix, *args)


@contextmanager
def _quiet_weight_norm() -> Iterator[None]:
    """espnet2 applies torch's deprecated ``weight_norm``: one FutureWarning per layer, nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
        yield


def _check_generator(conf: Dict[str, Any]) -> None:
    """One-line errors for generator settings espnet2 would only assert on."""
    scales, kernels = list(conf["upsample_scales"]), list(conf["upsample_kernel_sizes"])
    if math.prod(scales) != HOP:
        raise ValueError(f"hifigan: upsample_scales {scales} multiply to {math.prod(scales)}, need {HOP} "
                         f"(20 ms token frames at {SAMPLE_RATE} Hz)")
    if kernels != [2 * s for s in scales]:
        raise ValueError(f"hifigan: upsample_kernel_sizes must be twice upsample_scales, got {kernels} for {scales}")
    if conf["channels"] % 2 ** len(scales):
        raise ValueError(f"hifigan: channels={conf['channels']} must be divisible by 2**{len(scales)} "
                         "(halved per upsampling stage)")


def build_generator(config: Dict[str, Any]) -> UnitHiFiGAN:
    """Rebuild the generator from an experiment's config.yaml contents."""
    return UnitHiFiGAN(n_tokens=config.get("n_tokens"), feat_dim=config.get("feat_dim"), **config.get("model", {}))


def build_discriminator(config: Dict[str, Any]) -> nn.Module:
    """espnet2's multi-scale + multi-period discriminator (its defaults are HiFi-GAN V1's)."""
    with _quiet_weight_norm():
        return HiFiGANMultiScaleMultiPeriodDiscriminator(**config.get("discriminator", {}))


class GANLosses(nn.Module):
    """HiFi-GAN's losses (LSGAN, summed over discriminators and layers as in ESPnet's HiFi-GAN recipes)."""

    def __init__(self, mel_loss: Dict[str, Any], lambda_mel: float, lambda_feat_match: float, lambda_adv: float):
        super().__init__()
        self.mel = MelSpectrogramLoss(**{**MEL_LOSS_DEFAULTS, **mel_loss})
        self.feat_match = FeatureMatchLoss(average_by_layers=False, average_by_discriminators=False)
        self.g_adv = GeneratorAdversarialLoss(average_by_discriminators=False, loss_type="mse")
        self.d_adv = DiscriminatorAdversarialLoss(average_by_discriminators=False, loss_type="mse")
        self.lambdas = (lambda_mel, lambda_feat_match, lambda_adv)

    def generator(self, y_hat: torch.Tensor, y: torch.Tensor, p_hat: List, p: List) -> Tuple[torch.Tensor, Dict]:
        """λ_mel·mel L1 + λ_fm·feature matching + λ_adv·adversarial of (B, 1, S) waves and their D outputs."""
        mel, fm, adv = self.mel(y_hat, y), self.feat_match(p_hat, p), self.g_adv(p_hat)
        loss = self.lambdas[0] * mel + self.lambdas[1] * fm + self.lambdas[2] * adv
        return loss, {"g_loss": loss.item(), "mel": mel.item(), "feat_match": fm.item(), "adv": adv.item()}

    def discriminator(self, p_hat: List, p: List) -> Tuple[torch.Tensor, Dict]:
        """LSGAN discriminator loss: (D(y) − 1)² + D(ŷ)²."""
        real, fake = self.d_adv(p_hat, p)
        return real + fake, {"d_real": real.item(), "d_fake": fake.item()}


# ----------------------------------------------------------------------------------------------- data


class WaveVocoderData(MelVocoderData):
    """Features of a feats.scp paired with their 16 kHz waveforms, both read when a batch is made (see the base class).

    Audio recorded below 16 kHz is refused: upsampled, it has nothing above its own Nyquist frequency,
    and a vocoder trained on it learns muffled speech.
    """

    frames_per_token = HOP
    target_unit = "samples"
    min_native_rate = SAMPLE_RATE

    def _make_target(self, wave: torch.Tensor) -> torch.Tensor:
        """The waveform itself (resampled to 16 kHz on read)."""
        return wave

    def _target_length(self, samples: int) -> int:
        return samples

    def frames(self, utt: str) -> int:
        """Token frames with audio behind them: min(T_tok, samples // 320)."""
        return min(self.num_frames[utt], self.targets.lengths[utt] // HOP)

    def segment_batches(self, batch_size: int, segment_frames: int, segments_per_utt: int,
                        rng: np.random.Generator) -> List[List[Tuple[str, int]]]:
        """Shuffled groups of ``batch_size`` (utterance, start frame) crops, each utterance ``segments_per_utt``
        times; all crops are drawn here so every DDP rank builds the same list before taking its share."""
        usable = [u for u in self.utts if self.frames(u) >= segment_frames]
        if not usable:
            raise ValueError(f"no utterance has {segment_frames} token frames (segment_frames) or more")
        order = [usable[i] for i in rng.permutation(len(usable) * segments_per_utt) % len(usable)]
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        return [[(u, int(rng.integers(0, self.frames(u) - segment_frames + 1))) for u in g] for g in groups]

    def crop(self, crops: Sequence[Tuple[str, int]], head: Head, segment_frames: int,
             device: str = "cpu") -> Tuple[TokenInput, torch.Tensor]:
        """(TokenInput (B, L, …), waves (B, 1, 320·L)) of ``L = segment_frames`` crops at the given start frames."""
        items, waves = [], []
        for utt, start in crops:
            feats = self.feats[utt][start:start + segment_frames]
            items.append(head(torch.from_numpy(feats).to(device)))
            waves.append(self.targets[utt][start * HOP:(start + segment_frames) * HOP])
        tokens, _ = pad_token_inputs(items)
        return tokens, torch.stack(waves).unsqueeze(1).to(device)


# ----------------------------------------------------------------------------------------------- training


def _split_batch(outputs: List[List[torch.Tensor]], n: int) -> Tuple[List[List[torch.Tensor]], List[List[torch.Tensor]]]:
    """Discriminator outputs of a concatenated (first ``n`` | rest) batch as two output lists, one per part."""
    return [[t[:n] for t in outs] for outs in outputs], [[t[n:] for t in outs] for outs in outputs]


@contextmanager
def _frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with ``requires_grad`` off: gradients flow through it to its input but none reach its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _train_step(gen: nn.Module, disc: nn.Module, losses: GANLosses, opt_g, opt_d, tokens: TokenInput,
                y: torch.Tensor, grad_clip: float) -> Dict[str, float]:
    """One HiFi-GAN step on (B, 1, S) target waves: the discriminator, then the generator (either may be in DDP).

    Under DDP each backward reduces one model's gradients once: D sees fake and real in one forward (one
    backward, D's gradients reduced); the generator's adversarial and feature-matching losses go through the
    bare, frozen D, so G's backward reduces G's gradients only. Losses are means over the rank's crops,
    rescaled (:func:`distributed.scale_loss`) so an uneven split steps as the union batch would.
    """
    n = y.shape[0]
    y_hat = gen(tokens).unsqueeze(1)
    p_fake, p_real = _split_batch(disc(torch.cat([y_hat.detach(), y])), n)
    d_loss, d_stats = losses.discriminator(p_fake, p_real)
    optimizer_step(disc, opt_d, distributed.scale_loss(d_loss, n), grad_clip)
    with _frozen(distributed.unwrap(disc)) as bare:
        with torch.no_grad():
            p = bare(y)
        g_loss, g_stats = losses.generator(y_hat, y, bare(y_hat), p)
        optimizer_step(gen, opt_g, distributed.scale_loss(g_loss, n), grad_clip)
    return {**g_stats, **d_stats}


@torch.no_grad()
def _validate(gen: UnitHiFiGAN, data: WaveVocoderData, utts: Sequence[str], head: Head, losses: GANLosses,
              device: str) -> float:
    """Mean mel L1 of whole utterances (the generator alone, as HiFi-GAN validates); ranks share ``utts``."""
    gen.eval()
    total = 0.0
    mine = distributed.shard(list(utts), drop_remainder=False)
    for utt in mine:
        tokens, _ = pad_token_inputs([head(torch.from_numpy(data.feats[utt]).to(device))])
        y_hat = gen(tokens)
        y = data.targets[utt].to(device)
        n = min(y_hat.shape[-1], len(y))
        total += losses.mel(y_hat[:, None, :n], y[None, None, :n]).item()
    gen.train()
    totals, count = distributed.sum_stats({"mel": total}, len(mine))
    return totals.get("mel", 0.0) / max(count, 1)


def _run_epoch(gen, disc, losses, opt_g, opt_d, data: WaveVocoderData, head: Head, conf: Dict[str, Any],
               epoch: int, device: str) -> Dict[str, float]:
    """One pass of random crops over the training set (this rank's share of the steps); step stats over all ranks."""
    rng = np.random.default_rng(conf["seed"] + epoch)
    groups = distributed.shard(data.segment_batches(conf["batch_size"], conf["segment_frames"],
                                                    conf["segments_per_utt"], rng))
    totals: Dict[str, float] = {}
    gen.train()
    disc.train()
    with logging_redirect_tqdm():
        batches = prefetch((data.crop(group, head, conf["segment_frames"], device) for group in groups),
                           conf["prefetch_batches"])
        for tokens, y in tqdm(batches, total=len(groups), desc=f"epoch {epoch}", unit="step", mininterval=10.0,
                              disable=not distributed.is_main()):
            for k, v in _train_step(gen, disc, losses, opt_g, opt_d, tokens, y, conf["grad_clip"]).items():
                totals[k] = totals.get(k, 0.0) + v
    summed, n = distributed.sum_stats(totals, len(groups))
    return {**{k: v / max(n, 1) for k, v in summed.items()}, "steps": len(groups)}


def train(config_path: str, feats: str, data_dir: str, exp_dir: str, head: str = "hard",
          kmeans: Optional[str] = None, head_conf: Optional[Dict[str, Any]] = None,
          overrides: Optional[Dict[str, Any]] = None, valid_feats: Optional[str] = None,
          valid_data: Optional[str] = None, device: Optional[str] = None) -> Dict[str, Any]:
    """Train (or resume) one HiFi-GAN unit-vocoder experiment and write ``model.pth`` (generator weights).

    Under ``torchrun --nproc_per_node N`` it trains data-parallel (:mod:`softtok.downstream.distributed`).
    """
    with distributed.session(device or default_device()) as device:
        return mel_train.run_logged(exp_dir, valid_feats, valid_data, lambda exp: _train(
            config_path, feats, data_dir, exp, head, kmeans, head_conf or {}, overrides or {}, valid_feats,
            valid_data, device))


def _setup(conf, feats, data_dir, exp: Path, head_name, kmeans, head_conf, valid_feats, valid_dir):
    """(head, train data, valid data, config) of a run; rank 0 writes ``config.yaml``."""
    preload = {"preload": conf["preload_feats"], "preload_targets": conf["preload_targets"]}
    train_data = WaveVocoderData(feats, data_dir, **preload)
    valid_data = WaveVocoderData(valid_feats, valid_dir, **preload) if valid_feats else train_data
    head = build_head(head_name, load_codebooks(kmeans, feats), train_data.source_dims, **head_conf)
    config = mel_train.run_config(conf, "hifigan", head, head_conf, kmeans, feats, data_dir,
                                  train_data.feats[train_data.utts[0]], sample_rate=SAMPLE_RATE, hop=HOP)
    save_run_config(exp, config)
    return head, train_data, valid_data, config


def _train(config_path, feats, data_dir, exp: Path, head_name, kmeans, head_conf, overrides, valid_feats,
           valid_dir, device) -> Dict[str, Any]:
    conf = load_run_config(config_path, DEFAULTS, overrides)
    head, train_data, valid_data, config = _setup(conf, feats, data_dir, exp, head_name, kmeans, head_conf,
                                                  valid_feats, valid_dir)
    gen, disc = build_generator(config), build_discriminator(config)
    init_embedding(gen.embedding, conf["embed_init"], head)
    gen, disc = gen.to(device), disc.to(device)
    losses = GANLosses(conf["mel_loss"], conf["lambda_mel"], conf["lambda_feat_match"], conf["lambda_adv"]).to(device)
    opts = [torch.optim.AdamW(m.parameters(), lr=conf["lr"], betas=tuple(conf["betas"]),
                              weight_decay=conf["weight_decay"]) for m in (gen, disc)]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=conf["lr_decay"]) for o in opts]
    checkpoints = EpochCheckpoints(exp, gen, opts[0], scheds[0],
                                   extra={"discriminator": disc, "optimizer_d": opts[1], "scheduler_d": scheds[1]})
    short = sum(train_data.frames(u) < conf["segment_frames"] for u in train_data.utts)
    logger.info("hifigan vocoder: generator %.2fM / discriminator %.2fM parameters, %d train utts (%d shorter than "
                "%d frames, skipped) / %d valid utts, head %s", _millions(gen), _millions(disc),
                len(train_data.utts), short, conf["segment_frames"], len(valid_data.utts), head.settings())
    valid_utts = valid_data.utts[:conf["max_valid_utts"]]
    start_epoch = checkpoints.resume()
    nets = distributed.wrap(gen, device), distributed.wrap(disc, device)  # DDP under torchrun; validation: bare
    for epoch in range(start_epoch, conf["max_epoch"] + 1):
        t_epoch = time.perf_counter()
        tr = _run_epoch(*nets, losses, *opts, train_data, head, conf, epoch, device)
        for sched in scheds:
            sched.step()
        valid = _validate(gen, valid_data, valid_utts, head, losses, device)
        checkpoints.save({"epoch": epoch, **{f"train_{k}": v for k, v in tr.items()}, "valid_loss": valid,
                          "seconds": round(time.perf_counter() - t_epoch, 1)})
    return checkpoints.finish(conf["keep_nbest"])


def _millions(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# ----------------------------------------------------------------------------------------------- synthesis


def load_renderer(exp_dir: str, device: str = "cpu",
                  timers: Optional[Dict[str, float]] = None) -> Tuple[Render, Dict[str, Any]]:
    """(render(tokens, lengths) -> 16 kHz wave of a batch of one, config) of a trained HiFi-GAN generator (weight
    norm folded into the weights: same output, faster); ``timers`` adds up network seconds."""
    model, config = load_trained(exp_dir, device=device, build=build_generator)
    model.generator.remove_weight_norm()
    timers = timers if timers is not None else {}

    def render(tokens: TokenInput, lengths: torch.Tensor) -> torch.Tensor:
        t1 = time.perf_counter()
        with torch.no_grad():
            wave = model(tokens)[0]
        timers["network_seconds"] = timers.get("network_seconds", 0.0) + time.perf_counter() - t1
        return wave

    return render, config


def synthesize(exp_dir: str, feats: str, out_dir: str, head: Optional[str] = None,
               head_conf: Optional[Dict[str, Any]] = None, kmeans: Optional[str] = None,
               device: str = "cpu") -> Dict[str, Any]:
    """Write ``<out_dir>/wav/<utt>.wav`` (16 kHz), ``wav.scp`` and ``synth.yaml`` for every utterance of ``feats``."""
    t0 = time.perf_counter()
    timer = {"network_seconds": 0.0}
    render, config = load_renderer(exp_dir, device, timer)
    the_head = inference_head(config, head, head_conf, kmeans, str(Path(exp_dir) / "config.yaml"))
    settings = {**synth_settings(exp_dir, config, feats, the_head, head_conf, kmeans), "vocoder": "hifigan",
                "sample_rate": SAMPLE_RATE}
    summary = synthesize_waves(render, the_head, feats, out_dir, settings, device)
    return {**summary, "network_seconds": round(timer["network_seconds"], 2),
            "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------------------------- CLI


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """``train`` (the mel vocoder's training options) and ``synthesize`` subcommands."""
    p = argparse.ArgumentParser(prog=prog, description="HiFi-GAN unit vocoder: tokens -> 16 kHz waveform.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("train", parents=[mel_train.build_parser()], conflict_handler="resolve",
                   help="train (or resume) from a YAML config",
                   description="Train (or resume) a HiFi-GAN unit vocoder from a YAML config.")
    add_synthesis_args(sub.add_parser("synthesize", help="synthesize 16 kHz wavs with a trained model",
                                      description="Synthesize 16 kHz speech with a trained HiFi-GAN unit vocoder."))
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    if args.command == "train":
        return run_job("train", lambda: train(args.config, args.feats, args.data_dir, args.exp_dir, args.head,
                                              args.kmeans, args.head_conf, cli_overrides(args), args.valid_feats,
                                              args.valid_data, args.device), logger)
    return run_job("synthesize", lambda: synthesize(args.exp_dir, args.feats, args.out_dir, args.head,
                                                    args.head_conf, args.kmeans, args.device), logger)


if __name__ == "__main__":
    raise SystemExit(main())
