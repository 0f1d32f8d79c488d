"""Train the ``mel`` unit vocoder (tokens → log-mel) from a YAML config: seeded, checkpointed every epoch, resumable.

``exp_dir`` gets ``train.log``, ``config.yaml`` (everything needed to rebuild the model: n_tokens or
feat_dim, head, head_conf, codebook path, model options), ``checkpoints/epoch<N>.pth``, ``history.yaml``
and, at the end, ``model.pth``: the average of the ``keep_nbest`` checkpoints with the lowest
validation loss (the training set serves as validation set when none is given). Under
``torchrun --nproc_per_node N`` it trains data-parallel (:mod:`softtok.downstream.distributed`).

    softtok voc train --config conf/voc_mel.yaml \\
        --feats dump/whisper/train/feats.scp --data-dir data/train \\
        --kmeans exp/kmeans_k128.npy --head hard --exp-dir exp/voc_mel_hard_k128

Synthesis: ``softtok voc synthesize`` (see :mod:`softtok.downstream.vocoder.mel`).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Type

import torch

from softtok.common import default_device, run_job, setup_logging
from softtok.downstream import distributed
from softtok.downstream.data import iterate
from softtok.downstream.training import (EpochCheckpoints, add_training_args, cli_overrides, init_embedding,
                                        input_provenance, kmeans_entry, load_codebooks, load_run_config, log_to_file,
                                        optimizer_step, save_run_config)
from softtok.downstream.vocoder.mel import MEL_SETTINGS, MelVocoderData, build_model
from softtok.tokenizers.heads import Head, build_head, input_sizes
from softtok.tokenizers.streams import split_sources

logger = logging.getLogger(__name__)

DEFAULTS: Dict[str, Any] = {
    "seed": 0, "max_epoch": 30, "batch_frames": 4000, "lr": 1e-3, "weight_decay": 0.0, "grad_clip": 5.0,
    "warmup_steps": None,  # a count: linear warmup to lr over that many steps, then lr·sqrt(warmup/step) (ESPnet WarmupLR)
    "keep_nbest": 3, "max_utt_frames": 1500, "model": {},
    "embed_init": "random", "preload_feats": False, "preload_targets": False,
    "prefetch_batches": 0,  # > 0: make that many batches ahead in a thread (GPU configs: reading overlaps steps)
}


@dataclass(frozen=True)
class MelModelKind:
    """What differs between the token → mel vocoders this trainer trains: the data (targets), the model builder and
    the config entries that describe the target mel."""

    name: str
    data: Type[MelVocoderData]
    build: Callable[[Dict[str, Any]], torch.nn.Module]
    settings: Dict[str, Any]


MEL = MelModelKind("mel", MelVocoderData, build_model, {"mel": MEL_SETTINGS})


def _warmup_scheduler(optimizer: torch.optim.Optimizer, warmup: Optional[int]) -> Optional[Any]:
    """Noam-style warmup then 1/sqrt decay (as ASR training); None without ``warmup`` (a constant lr)."""
    if warmup is None:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1))))


def _run_epoch(model, data, groups, head, optimizer=None, grad_clip=5.0, device="cpu",
               prefetch_batches: int = 0, scheduler=None) -> Dict[str, float]:
    """One pass over ``groups``; trains when an optimizer is given. Returns frame-weighted mean stats."""
    model.train(optimizer is not None)
    totals: Dict[str, float] = {}
    n = 0
    with torch.set_grad_enabled(optimizer is not None):
        for _, tokens, lengths, target, target_lengths in iterate(data, groups, head, None, device,
                                                                              prefetch_batches):
            mel, mel_lengths = model(tokens, lengths)
            loss, stats = distributed.unwrap(model).loss(mel, mel_lengths, target, target_lengths)
            weight = int(torch.minimum(mel_lengths, target_lengths).sum())
            if optimizer is not None:  # the loss is a mean over the batch's frames
                optimizer_step(model, optimizer, distributed.scale_loss(loss, weight), grad_clip, scheduler)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v * weight
            n += weight
    totals, n = distributed.sum_stats(totals, n)
    return {k: v / max(n, 1) for k, v in totals.items()}


def train(config_path: str, feats: str, data_dir: str, exp_dir: str, head: str = "hard",
          kmeans: Optional[str] = None, head_conf: Optional[Dict[str, Any]] = None,
          overrides: Optional[Dict[str, Any]] = None, valid_feats: Optional[str] = None,
          valid_data: Optional[str] = None, device: Optional[str] = None, kind: MelModelKind = MEL) -> Dict[str, Any]:
    """Train (or resume) one token → mel experiment (``kind``: which model and target) and write ``model.pth``."""
    with distributed.session(device or default_device()) as device:
        return run_logged(exp_dir, valid_feats, valid_data, lambda exp: _train(
            config_path, feats, data_dir, exp, head, kmeans, head_conf or {}, overrides or {}, valid_feats,
            valid_data, device, kind))


def run_logged(exp_dir: str, valid_feats: Optional[str], valid_data: Optional[str],
               body: Callable[[Path], Dict[str, Any]]) -> Dict[str, Any]:
    """Check that the validation options come together, make ``exp_dir`` and run ``body(exp)`` logging to train.log."""
    if (valid_feats is None) != (valid_data is None):
        raise ValueError("--valid-feats and --valid-data go together")
    exp = Path(exp_dir)
    exp.mkdir(parents=True, exist_ok=True)
    with log_to_file(exp / "train.log"):
        return body(exp)


def run_config(conf: Dict[str, Any], vocoder: str, head: Head, head_conf: Dict[str, Any], kmeans: Optional[str],
               feats: str, data_dir: str, first_feats: Any, **extra: Any) -> Dict[str, Any]:
    """A vocoder run's config.yaml contents (after checking the features fit the codebooks): enough to rebuild it."""
    source_dims = [first_feats.shape[1]] if head.codebooks is None else head.codebooks.source_dims
    if head.codebooks is not None:
        for cb, x in zip(head.codebooks.sources, split_sources(torch.from_numpy(first_feats), source_dims)):
            cb.check_features(x, name=feats)
    n_tokens, feat_dim = input_sizes(head, source_dims)
    return {**conf, "vocoder": vocoder, "head": head.name, "head_conf": head_conf, "n_tokens": n_tokens,
            "feat_dim": feat_dim, "kmeans": kmeans_entry(kmeans),
            **input_provenance(head.codebooks.sources if head.codebooks is not None else None, feats),
            "train_feats": str(feats),
            "train_data": str(data_dir), **extra}


def _train(config_path, feats, data_dir, exp: Path, head_name, kmeans, head_conf, overrides, valid_feats,
           valid_dir, device, kind: MelModelKind) -> Dict[str, Any]:
    conf = load_run_config(config_path, DEFAULTS, overrides)
    preload = {"preload": conf["preload_feats"], "preload_targets": conf["preload_targets"]}
    train_data = kind.data(feats, data_dir, conf["max_utt_frames"], **preload)
    valid_data = kind.data(valid_feats, valid_dir, **preload) if valid_feats else train_data
    head = build_head(head_name, load_codebooks(kmeans, feats), train_data.source_dims, **head_conf)
    config = run_config(conf, kind.name, head, head_conf, kmeans, feats, data_dir,
                        train_data.feats[train_data.utts[0]], **kind.settings)
    save_run_config(exp, config)
    model = kind.build(config)
    init_embedding(model.embedding, conf["embed_init"], head)
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_frames = sum(train_data.num_frames[u] for u in train_data.utts)
    logger.info("%s vocoder: %.2fM parameters, %d train utts (%d token frames) / %d valid utts, head %s",
                kind.name, n_params / 1e6, len(train_data.utts), n_frames, len(valid_data.utts), head.settings())
    optimizer = torch.optim.Adam(model.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"])
    scheduler = _warmup_scheduler(optimizer, conf["warmup_steps"])
    checkpoints = EpochCheckpoints(exp, model, optimizer, scheduler)
    start_epoch = checkpoints.resume()
    net = distributed.wrap(model, device)  # DDP under torchrun; validation runs on the bare model
    valid_groups = distributed.shard(valid_data.batches(conf["batch_frames"]), drop_remainder=False)
    for epoch in range(start_epoch, conf["max_epoch"] + 1):
        t_epoch = time.perf_counter()
        distributed.seed_rank(conf["seed"], epoch)
        groups = distributed.shard(train_data.batches(conf["batch_frames"], shuffle=True, seed=conf["seed"] + epoch))
        tr = _run_epoch(net, train_data, groups, head, optimizer, conf["grad_clip"], device, conf["prefetch_batches"],
                        scheduler)
        t_train = time.perf_counter() - t_epoch
        va = _run_epoch(model, valid_data, valid_groups, head, device=device, prefetch_batches=conf["prefetch_batches"])
        checkpoints.save({"epoch": epoch, **{f"train_{k}": v for k, v in tr.items()},
                          **{f"valid_{k}": v for k, v in va.items()},
                          "train_seconds_per_1k_frames": round(1000 * t_train / max(n_frames, 1), 4),
                          "seconds": round(time.perf_counter() - t_epoch, 1)})
    return checkpoints.finish(conf["keep_nbest"])


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train the mel unit vocoder (tokens -> log-mel; Griffin-Lim "
                                                       "at synthesis).")
    p.add_argument("--config", required=True)
    p.add_argument("--feats", required=True, help="training feats.scp (50 frames/s)")
    p.add_argument("--data-dir", required=True, help="Kaldi data dir of the same utterances (wav.scp, 16 kHz)")
    p.add_argument("--valid-feats", help="validation feats.scp (default: the training set)")
    p.add_argument("--valid-data", help="validation data dir (with --valid-feats)")
    add_training_args(p)
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    return run_job("train", lambda: train(args.config, args.feats, args.data_dir, args.exp_dir, args.head,
                                          args.kmeans, args.head_conf, cli_overrides(args), args.valid_feats,
                                          args.valid_data, args.device), logger)


if __name__ == "__main__":
    raise SystemExit(main())
