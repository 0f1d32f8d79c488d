"""Training plumbing shared by every downstream model (ASR, vocoders).

Seeding, device choice, ``train.log``, per-epoch checkpoints with resume, and the final
``model.pth`` averaged over the best epochs by validation loss (as ESPnet's ``valid.loss.ave``).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set

import numpy as np
import torch

from softtok.common import positive_float, positive_int
from softtok.downstream import distributed
from softtok.downstream.embedding import TokenEmbedding
from softtok.tokenizers.fileio import atomic_path, load_torch, load_yaml, save_yaml
from softtok.tokenizers.heads import Head, add_head_args
from softtok.tokenizers.jobs import feature_spec_of
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.outdir import remove_stale_temps
from softtok.tokenizers.provenance import differences
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import one_or_list

logger = logging.getLogger(__name__)


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The options every downstream ``train`` CLI shares: input head, codebook, experiment folder, device."""
    from softtok.common import int_at_least, yaml_mapping

    p.add_argument("--kmeans", help="codebook .npy (discrete heads); a comma list: one per feature source")
    add_head_args(p, shortcuts=False)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--override", type=yaml_mapping, default={}, help="config keys to override, e.g. '{max_epoch: 1}'")
    p.add_argument("--num-threads", type=int_at_least(1), help="torch CPU threads (config key num_threads; default: all)")


def cli_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The config overrides a training CLI was given: ``--override`` plus ``--num-threads``."""
    return {**args.override, **({"num_threads": args.num_threads} if args.num_threads else {})}


# Config keys that count something, with their least value (0: off / no limit / default), and rates that must be > 0.
COUNT_KEYS = {"max_epoch": 1, "batch_frames": 1, "keep_nbest": 1, "warmup_steps": 1, "max_text_chars": 1,
              "max_utt_frames": 0, "num_threads": 0, "prefetch_batches": 0, "seed": 0}
RATE_KEYS = ("lr", "grad_clip")


def check_run_config(conf: Dict[str, Any], source: str) -> None:
    """Refuse a training config whose counts are not whole numbers >= their least value or whose rates are not
    finite numbers > 0 (``batch_frames: 0``, ``max_epoch: -1``, ``lr: .nan``, ``warmup_steps: true``) in one line."""
    try:
        for key, least in COUNT_KEYS.items():
            if conf.get(key) is not None:
                positive_int(conf[key], key, least)
        for key in RATE_KEYS:
            if key in conf:
                positive_float(conf[key], key)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_run_config(config_path: str, defaults: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """defaults < YAML file < overrides, checked; seeds every RNG and sets torch's threads (``num_threads``) from it."""
    conf = {**defaults, **load_yaml(config_path), **overrides}
    check_run_config(conf, config_path)
    seed_everything(conf["seed"])
    torch.set_num_threads(conf.get("num_threads") or torch.get_num_threads())
    return conf


def load_codebook(kmeans: str, feats_scp: str) -> Codebook:
    """The codebook at ``kmeans``, refused if ``feats_scp`` was made by other features."""
    codebook = Codebook.load(kmeans)
    codebook.check_spec(feature_spec_of(feats_scp), source=feats_scp)
    return codebook


def load_codebooks(kmeans: Optional[str], feats: str) -> Optional[List[Codebook]]:
    """One codebook per source of a comma list (``--kmeans a.npy,b.npy`` with ``--feats a.scp,b.scp``), each checked
    against its own features; None without ``kmeans``. A count mismatch is an error."""
    if not kmeans:
        return None
    paths, scps = split_list(kmeans), split_list(feats)
    if len(paths) != len(scps):
        raise ValueError(f"{len(paths)} codebooks (--kmeans {kmeans}) for {len(scps)} feature streams ({feats})")
    return [load_codebook(p, f) for p, f in zip(paths, scps)]


def kmeans_entry(kmeans: Optional[str]) -> Optional[str | List[str]]:
    """``--kmeans`` as config.yaml records it: the resolved path, or a list of them for several sources."""
    if not kmeans:
        return None
    return one_or_list([str(Path(p).resolve()) for p in split_list(kmeans)])


class CodebookChanged(ValueError):
    """A codebook whose content is not the one a model was trained with."""


BUNDLE_SPEC = "softtok.yaml"  # inference/bundle.py's SPEC_FILE: a bundle carries its own checked codebook copies
_WARNED_UNHASHED: Set[str] = set()


def input_provenance(codebooks: Optional[Sequence[Codebook]], feats: str) -> Dict[str, Any]:
    """config.yaml's record, by content, of what a model is trained on: each codebook's sha256 (``kmeans_sha256``,
    one per ``kmeans`` path) and each feature source's spec (``feature_specs``, its feats.yaml less the counts)."""
    return {"kmeans_sha256": one_or_list([cb.meta["sha256"] for cb in codebooks]) if codebooks else None,
            "feature_specs": [feature_spec_of(f) for f in split_list(feats)]}


def verify_codebooks(config: Dict[str, Any], codebooks: Sequence[Codebook], where: str) -> None:
    """Refuse (one line naming the file) a codebook whose sha256 differs from the one ``where`` (a config.yaml)
    recorded at training; a config from before the hashes were recorded is warned about once and trusted."""
    recorded = split_list(config.get("kmeans_sha256"))
    if not recorded:
        if where not in _WARNED_UNHASHED:
            _WARNED_UNHASHED.add(where)
            logger.warning("%s records no codebook sha256 (trained by an older softtok): cannot check that %s is the "
                           "codebook it was trained with", where, ",".join(cb.meta.get("path", "?") for cb in codebooks))
        return
    if len(recorded) != len(codebooks):
        raise CodebookChanged(f"{where}: trained with {len(recorded)} codebooks, given {len(codebooks)}")
    for codebook, sha in zip(codebooks, recorded):
        if codebook.meta["sha256"] != sha:
            raise CodebookChanged(f"{codebook.meta['path']}: not the codebook {where} was trained with (sha256 "
                                  f"{codebook.meta['sha256'][:12]}…, trained with {sha[:12]}…); was it re-learned?")


def trained_codebooks(config: Dict[str, Any], where: str, kmeans: Optional[str] = None) -> Optional[List[Codebook]]:
    """The codebooks of a trained model (``kmeans``, else the config's paths), checked by :func:`verify_codebooks`;
    None for a continuous-input model."""
    paths = split_list(kmeans or config.get("kmeans"))
    if not paths:
        return None
    codebooks = [Codebook.load(p) for p in paths]
    verify_codebooks(config, codebooks, where)
    return codebooks


def check_experiment(exp: Path) -> None:
    """Refuse a trained experiment whose codebooks changed since training (a bundle folder is checked by its own
    file hashes instead: its config names the codebooks it was exported from, not the copies it holds)."""
    if not (exp / BUNDLE_SPEC).is_file():
        trained_codebooks(load_yaml(exp / "config.yaml"), str(exp / "config.yaml"))


def check_resume(exp: Path, config: Dict[str, Any]) -> None:
    """Refuse to resume checkpoints of ``exp`` trained on other codebooks or features than ``config`` names."""
    old_path = exp / "config.yaml"
    if not old_path.is_file() or not any((exp / "checkpoints").glob("epoch*.pth")):
        return
    old = load_yaml(old_path)
    changed = []
    if old.get("kmeans_sha256") not in (None, config.get("kmeans_sha256")):
        changed.append("the codebooks' content (kmeans_sha256)")
    specs, new_specs = old.get("feature_specs"), config.get("feature_specs") or []
    if specs is not None and specs != new_specs:
        changed += [differences(a, b) for a, b in zip(specs, new_specs) if a != b] or ["the number of feature sources"]
    if changed:
        raise ValueError(f"{old_path}: its checkpoints were trained on other inputs than this run's "
                         f"({'; '.join(changed)}); use a new --exp-dir or remove the old one")


def save_run_config(exp: Path, config: Dict[str, Any]) -> None:
    """Write ``exp/config.yaml`` (rank 0) after :func:`check_resume` (every rank) allows it."""
    check_resume(exp, config)
    if distributed.is_main():
        save_yaml(exp / "config.yaml", config)


EMBED_INITS = ("random", "centroids")


def init_embedding(embedding: TokenEmbedding, how: str, head: Head) -> None:
    """Config key ``embed_init``: ``random`` (nn.Embedding's N(0, 1)) or ``centroids`` (each stream's table from
    the PCA of its codebook; see :meth:`TokenEmbedding.init_from_centroids`)."""
    if how not in EMBED_INITS:
        raise ValueError(f"embed_init must be one of {EMBED_INITS}, got {how!r}")
    if how != "centroids" or head.name == "continuous":
        return  # continuous models have no token table
    embedding.init_from_centroids(head.codebooks.centroids())
    logger.info("%d token-embedding table(s) initialised from their codebooks' PCA", head.codebooks.n_streams)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename: no half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def average_checkpoints(paths: List[Path]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (integer buffers from the last)."""
    states = [load_torch(p)["model"] for p in paths]
    avg = {}
    for key, value in states[-1].items():
        avg[key] = (sum(s[key].double() for s in states) / len(states)).to(value.dtype) \
            if value.is_floating_point() else value
    return avg


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: float, scheduler: Optional[Any] = None) -> None:
    """Backward, clip the gradient norm, and step (skipped when the norm is not finite)."""
    optimizer.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if torch.isfinite(grad_norm):
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Copy every log record to ``path`` (``exp/train.log``) while the block runs (rank 0 only under torchrun)."""
    if not distributed.is_main():
        yield
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


class EpochCheckpoints:
    """``exp/checkpoints/epoch<N>.pth`` (model, optimizer, scheduler, RNG, history): resume and finish.

    ``extra``: more named objects with ``state_dict``/``load_state_dict`` saved alongside (e.g. a GAN's
    discriminator, its optimizer and scheduler); ``model.pth`` holds ``model`` alone (pass the model
    unwrapped, not its DDP wrapper). Under torchrun every rank resumes from the same file and rank 0
    alone writes, the others waiting at a barrier.
    """

    def __init__(self, exp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[Any] = None, extra: Optional[Dict[str, Any]] = None):
        self.exp, self.dir = exp, exp / "checkpoints"
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.extra = dict(extra or {})
        self.history: List[Dict[str, float]] = []
        self.t0 = time.perf_counter()

    def resume(self) -> int:
        """Load the newest checkpoint, if any (temp files of killed runs are removed); returns the first epoch still
        to train."""
        if distributed.is_main():
            remove_stale_temps(self.dir)
            remove_stale_temps(self.exp)
        done = sorted(self.dir.glob("epoch*.pth"), key=lambda p: int(p.stem[5:]))
        if not done:
            return 1
        state = load_torch(done[-1], weights_only=False)  # written by save() here: optimizer state, RNG, history
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for name, obj in self.extra.items():
            obj.load_state_dict(state["extra"][name])
        torch.set_rng_state(state["rng"])
        self.history = state["history"]
        logger.info("resumed from %s", done[-1])
        return state["epoch"] + 1

    def save(self, record: Dict[str, float]) -> None:
        """Log one finished epoch's ``record`` (with key ``epoch``) and checkpoint it."""
        self.history.append(record)
        logger.info("epoch %d: %s", record["epoch"],
                    " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": torch.get_rng_state(), "epoch": record["epoch"], "history": self.history}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.extra:
            state["extra"] = {name: obj.state_dict() for name, obj in self.extra.items()}
        if distributed.is_main():
            save_atomic(state, self.dir / f"epoch{record['epoch']}.pth")
        distributed.barrier()

    def finish(self, keep_nbest: int) -> Dict[str, Any]:
        """Average the ``keep_nbest`` epochs of lowest validation loss into ``model.pth``; write history.yaml."""
        if not self.history:
            raise ValueError(f"{self.exp}: no epoch trained (max_epoch < 1?)")
        best = sorted(self.history, key=lambda h: h["valid_loss"])[:keep_nbest]
        if distributed.is_main():
            save_atomic(average_checkpoints([self.dir / f"epoch{h['epoch']}.pth" for h in best]),
                        self.exp / "model.pth")
            save_yaml(self.exp / "history.yaml",
                      {"history": self.history, "averaged_epochs": [h["epoch"] for h in best]})
        distributed.barrier()
        summary = {"epochs": len(self.history), "best_valid_loss": round(best[0]["valid_loss"], 4),
                   "averaged": [h["epoch"] for h in best], "seconds": round(time.perf_counter() - self.t0, 1),
                   "output": str(self.exp / "model.pth")}
        logger.info("training done: %s", summary)
        return summary
