"""Train a TokenASR model from a YAML config: seeded, checkpointed every epoch, resumable.

``exp_dir`` gets ``train.log``, ``config.yaml`` (everything needed to rebuild the model),
``checkpoints/epoch<N>.pth`` and, at the end, ``model.pth``: the average of the
``keep_nbest`` checkpoints with the lowest validation loss (as ESPnet's
``valid.loss.ave``). Under ``torchrun --nproc_per_node N`` it trains data-parallel
(:mod:`softtok.downstream.distributed`); rank 0 writes every file.

    softtok asr train --config conf/train.yaml \\
        --train-feats dump/whisper/train/feats.scp --train-text data/train/text \\
        --valid-feats dump/whisper/dev/feats.scp --valid-text data/dev/text \\
        --kmeans exp/kmeans_k128.npy --head hard --exp-dir exp/asr_hard_k128
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import default_device, positive_float, run_job, setup_logging
from softtok.downstream import distributed
from softtok.downstream.asr.data import TokenASRData, read_transcripts
from softtok.downstream.asr.model import TokenASR, tokenizer_class
from softtok.downstream.data import iterate
from softtok.downstream.training import (EpochCheckpoints, add_training_args, check_experiment,
                                        cli_overrides, init_embedding, input_provenance, kmeans_entry, load_codebooks,
                                        load_run_config, log_to_file, optimizer_step, save_run_config)
from softtok.tokenizers.fileio import check_output, load_torch, load_yaml
from softtok.tokenizers.heads import build_head, input_sizes
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import tau_scales, taus_of

logger = logging.getLogger(__name__)

DEFAULTS: Dict[str, Any] = {
    "seed": 0, "max_epoch": 20, "batch_frames": 12000, "lr": 2e-3, "warmup_steps": 1000,
    "weight_decay": 1e-6, "grad_clip": 5.0, "keep_nbest": 5, "max_utt_frames": 1500, "max_text_chars": 2000,
    "model": {},
    "embed_init": "random", "token_type": "char",
    "preload_feats": False,  # read features at each batch (memory: the index only); true holds them in RAM
    "prefetch_batches": 0,  # > 0: collate that many batches ahead in a thread (GPU configs: reading overlaps steps)
}


def build_model(config: Dict[str, Any]) -> TokenASR:
    """Rebuild the model from an experiment's config.yaml contents."""
    return TokenASR(vocab_size=len(config["token_list"]), n_tokens=config.get("n_tokens"),
                    feat_dim=config.get("feat_dim"), **config["model"])


def load_trained(exp_dir: str | Path, checkpoint: str = "model.pth", device: str = "cpu"):
    """(model in eval mode, config, output tokenizer: characters or phones) of a trained experiment (refused when
    the codebooks at its config's paths changed since training)."""
    exp = Path(exp_dir)
    check_experiment(exp)
    config = load_yaml(exp / "config.yaml")
    model = build_model(config)
    model.load_state_dict(load_torch(exp / checkpoint, map_location=device))
    tokenizer = tokenizer_class(config.get("token_type", "char"))(config["token_list"][2:-1])
    return model.to(device).eval(), config, tokenizer


def _run_epoch(model, data, groups, head, tokenizer, optimizer=None, scheduler=None, grad_clip=5.0,
               desc="", device="cpu", prefetch_batches: int = 0) -> Dict[str, float]:
    """One pass over ``groups``; trains when an optimizer is given. Returns utterance-weighted means over all ranks."""
    model.train(optimizer is not None)
    totals: Dict[str, float] = {}
    n = 0
    with torch.set_grad_enabled(optimizer is not None), logging_redirect_tqdm():
        for _, tokens, lengths, ys, y_lens in tqdm(iterate(data, groups, head, tokenizer, device, prefetch_batches),
                                                        total=len(groups),
                                                   desc=desc, unit="batch", leave=False,
                                                   disable=not distributed.is_main()):
            loss, stats = model(tokens, lengths, ys, y_lens)
            if optimizer is not None:  # the loss is a mean over utterances (espnet2 CTC, LabelSmoothingLoss)
                optimizer_step(model, optimizer, distributed.scale_loss(loss, len(lengths)), grad_clip, scheduler)
            weight = len(lengths)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v * weight
            n += weight
    totals, n = distributed.sum_stats(totals, n)
    return {k: v / max(n, 1) for k, v in totals.items()}


def train(config_path: str, train_feats: str, train_text: str, valid_feats: str, valid_text: str,
          exp_dir: str, head: str = "hard", kmeans: Optional[str] = None,
          head_conf: Optional[Dict[str, Any]] = None, overrides: Optional[Dict[str, Any]] = None,
          tau_factor: Optional[float] = None, device: Optional[str] = None) -> Dict[str, Any]:
    """Train (or resume) one experiment and write the averaged ``model.pth``.

    ``tau_factor`` (soft/soft training) sets the soft head's τ to that multiple of the median
    squared distance of training frames to their nearest centroid.
    """
    exp = check_output(exp_dir, "--exp-dir", is_dir=True)
    exp.mkdir(parents=True, exist_ok=True)
    with distributed.session(device or default_device()) as device, log_to_file(exp / "train.log"):
        return _train(config_path, train_feats, train_text, valid_feats, valid_text, exp, head, kmeans,
                      head_conf or {}, overrides or {}, tau_factor, device)


def _train(config_path, train_feats, train_text, valid_feats, valid_text, exp: Path, head_name, kmeans,
           head_conf, overrides, tau_factor, device) -> Dict[str, Any]:
    if tau_factor is not None and (head_name != "soft" or not kmeans):
        raise ValueError(f"--tau-factor {tau_factor} needs --head soft and --kmeans")
    if tau_factor is not None:
        positive_float(tau_factor, "--tau-factor")
    conf = load_run_config(config_path, DEFAULTS, overrides)
    codebooks = load_codebooks(kmeans, train_feats)
    if tau_factor is not None:
        scales = tau_scales(codebooks, split_list(train_feats))
        head_conf = {**head_conf, "tau": taus_of(tau_factor, scales)}
        logger.info("soft training: τ = %g × median squared distance %s = %s", tau_factor, scales, head_conf["tau"])
    train_data = TokenASRData(train_feats, read_transcripts(train_text, conf["max_text_chars"]),
                              conf["max_utt_frames"], conf["preload_feats"])
    valid_data = TokenASRData(valid_feats, read_transcripts(valid_text, conf["max_text_chars"]),
                              preload=conf["preload_feats"])
    head = build_head(head_name, codebooks, train_data.source_dims, **head_conf)
    tokenizer = tokenizer_class(conf["token_type"]).from_texts(list(train_data.text.values()))
    n_tokens, feat_dim = input_sizes(head, train_data.source_dims)
    config = {**conf, "token_list": tokenizer.token_list, "head": head_name, "head_conf": head_conf, "tau_factor": tau_factor,
              "n_tokens": n_tokens, "feat_dim": feat_dim, "kmeans": kmeans_entry(kmeans),
              **input_provenance(codebooks, train_feats), "train_feats": str(train_feats)}
    save_run_config(exp, config)
    model = build_model(config)
    init_embedding(model.embedding, conf["embed_init"], head)
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2fM parameters, %d train / %d valid utts, vocab %d, head %s",
                n_params / 1e6, len(train_data.utts), len(valid_data.utts), len(tokenizer), head.settings())
    optimizer = torch.optim.Adam(model.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"])
    warmup = conf["warmup_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # Noam-style warmup then 1/sqrt decay (ESPnet WarmupLR)
        optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1))))
    checkpoints = EpochCheckpoints(exp, model, optimizer, scheduler)
    start_epoch = checkpoints.resume()
    net = distributed.wrap(model, device)  # DDP under torchrun; validation runs on the bare model
    valid_groups = distributed.shard(valid_data.batches(conf["batch_frames"]), drop_remainder=False)
    for epoch in range(start_epoch, conf["max_epoch"] + 1):
        t_epoch = time.perf_counter()
        distributed.seed_rank(conf["seed"], epoch)
        groups = distributed.shard(train_data.batches(conf["batch_frames"], shuffle=True, seed=conf["seed"] + epoch))
        tr = _run_epoch(net, train_data, groups, head, tokenizer, optimizer, scheduler, conf["grad_clip"],
                        desc=f"epoch {epoch} train", device=device, prefetch_batches=conf["prefetch_batches"])
        va = _run_epoch(model, valid_data, valid_groups, head, tokenizer, desc=f"epoch {epoch} valid",
                        device=device, prefetch_batches=conf["prefetch_batches"])
        checkpoints.save({"epoch": epoch, **{f"train_{k}": v for k, v in tr.items()},
                          **{f"valid_{k}": v for k, v in va.items()}, "lr": optimizer.param_groups[0]["lr"],
                          "seconds": round(time.perf_counter() - t_epoch, 1)})
    return checkpoints.finish(conf["keep_nbest"])


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train a token ASR model (hybrid CTC/attention).")
    p.add_argument("--config", required=True)
    p.add_argument("--train-feats", required=True)
    p.add_argument("--train-text", required=True)
    p.add_argument("--valid-feats", required=True)
    p.add_argument("--valid-text", required=True)
    add_training_args(p)
    p.add_argument("--tau-factor", type=float,
                   help="soft/soft training: τ as a multiple of the median squared distance to the nearest centroid")
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    return run_job("train", lambda: train(args.config, args.train_feats, args.train_text, args.valid_feats,
                                          args.valid_text, args.exp_dir, args.head, args.kmeans, args.head_conf,
                                          cli_overrides(args), args.tau_factor,
                                          args.device), logger)


if __name__ == "__main__":
    raise SystemExit(main())
