"""Dump features of a data dir to kaldiio ark/scp, sharded and resumable.

Outputs in ``out_dir``: ``shards/feats_{rank}_{nshard}.{ark,scp,done}`` per shard
(contiguous slices of the sorted utterances, as fairseq's simple_kmeans), and once every
shard is done, ``feats.scp`` (all utterances, sorted), ``utt2num_frames`` and ``feats.yaml`` (feature spec,
frame rate, counts). A shard whose ``.done`` marker records the fingerprint of this run's inputs
(:func:`~softtok.tokenizers.provenance.feature_fingerprint`: featurizer spec and checkpoint, audio listing,
compression) is skipped, so a re-run resumes; any other shard is recomputed, and the merged files are removed
first. ``--nj N`` runs N local processes (:mod:`~softtok.tokenizers.workers`), ``--shard i/N`` one shard of an
array job, and ``--merge N`` only merges the N shards an array job wrote (softtok.recipes.launch runs it). The
folder is locked while a run writes it (:mod:`~softtok.tokenizers.outdir`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import positive_int
from softtok.tokenizers.audio import AudioError, read_utterance
from softtok.tokenizers.datadir import DataDir, load_data_dir
from softtok.tokenizers.features.base import Featurizer, build_featurizer
from softtok.tokenizers.fileio import (UTT2NUM_FRAMES, ArkScpWriter, atomic_write_text, check_output, load_yaml,
                                      read_scp_entries, save_yaml, write_num_frames)
from softtok.tokenizers.outdir import locked_output
from softtok.tokenizers.provenance import feature_fingerprint, shard_status
from softtok.tokenizers.workers import exit_on_signals, run_workers

logger = logging.getLogger(__name__)


def parse_shard(spec: str) -> Tuple[int, int]:
    """Parse ``i/N`` (0-based rank i of N shards)."""
    try:
        rank_s, nshard_s = spec.split("/")
        rank, nshard = int(rank_s), int(nshard_s)
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {spec!r}") from None
    if nshard < 1 or not 0 <= rank < nshard:
        raise ValueError(f"--shard {spec!r}: need 0 <= i < N")
    return rank, nshard


def shard_slice(n_items: int, rank: int, nshard: int) -> Tuple[int, int]:
    """Contiguous [start, end) of shard ``rank`` of ``nshard`` over ``n_items``."""
    per = -(-n_items // nshard)
    return min(rank * per, n_items), min((rank + 1) * per, n_items)


def plan_shards(n_items: int, nj: int = 1, shard: Optional[str] = None,
                merge: Optional[int] = None) -> Tuple[List[int], int]:
    """The ranks to run and the shard count: all of ``min(nj, n_items)``, one ``shard`` (i/N), or none (``merge`` N)."""
    if sum(x is not None for x in (shard, merge)) > 1 or (nj != 1 and (shard or merge)):
        raise ValueError("give only one of --nj, --shard and --merge")
    if merge is not None:
        if merge < 1:
            raise ValueError(f"--merge must be >= 1, got {merge}")
        return [], merge
    if shard is not None:
        rank, nshard = parse_shard(shard)
        return [rank], nshard
    if nj < 1:
        raise ValueError(f"--nj must be >= 1, got {nj}")
    nshard = max(1, min(nj, n_items))
    return list(range(nshard)), nshard


def require_done(statuses: Dict[Path, Optional[str]]) -> None:
    """Refuse to merge (``--merge N``) while any shard is not done with this run's inputs (status not None);
    names the first markers and why."""
    bad = [f"{p}: {why}" for p, why in statuses.items() if why is not None]
    if bad:
        raise ValueError(f"cannot merge {len(statuses)} shards: {len(bad)} not done "
                         f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")


def remove_merged(out_dir: Path, names: Tuple[str, ...]) -> None:
    """Remove a folder's merged outputs (in order: the index readers open first goes first) before shards change,
    so no merged file ever describes shards it was not made from."""
    for name in names:
        (out_dir / name).unlink(missing_ok=True)


def shard_paths(out_dir: Path, rank: int, nshard: int) -> Dict[str, Path]:
    """The ark, scp and done-marker paths of one shard."""
    stem = out_dir / "shards" / f"feats_{rank}_{nshard}"
    return {k: stem.with_suffix("." + k) for k in ("ark", "scp", "done")}


def _batches(utts: List[str], batch_size: int) -> List[List[str]]:
    """``utts`` in groups of ``batch_size`` (a whole number >= 1: never an empty shard marked done)."""
    batch_size = positive_int(batch_size, "--batch-size")
    return [utts[i:i + batch_size] for i in range(0, len(utts), batch_size)]


MERGED = ("feats.scp", UTT2NUM_FRAMES, "feats.yaml")


def shard_utts(data: DataDir, rank: int, nshard: int) -> List[str]:
    """The utterances of shard ``rank`` of ``nshard``."""
    start, end = shard_slice(len(data), rank, nshard)
    return data.utt_ids[start:end]


def dump_shard(data: DataDir, featurizer: Featurizer, out_dir: Path, rank: int, nshard: int,
               batch_size: int = 1, progress: bool = True, compress: bool = False) -> Dict[str, Any]:
    """Compute and write one shard's features (``compress``: Kaldi two-byte matrices); skip it when it is done
    from the same inputs (its fingerprint), recompute it otherwise."""
    paths = shard_paths(out_dir, rank, nshard)
    utts = shard_utts(data, rank, nshard)
    fingerprint = feature_fingerprint(featurizer.spec(), data, utts, compress)
    status = shard_status(paths["done"], fingerprint)
    if status is None:
        logger.info("shard %d/%d already done: %s", rank, nshard, paths["scp"])
        return load_yaml(paths["done"])
    if paths["done"].exists():
        logger.info("shard %d/%d %s; recomputing it", rank, nshard, status)
        paths["done"].unlink()
    n_frames = 0
    t0 = time.perf_counter()
    with ArkScpWriter(paths["ark"], paths["scp"], compress) as writer, logging_redirect_tqdm():
        bar = tqdm(total=len(utts), desc=f"{featurizer.name} shard {rank}/{nshard}", unit="utt",
                   disable=not progress, position=rank if nshard > 1 else None)
        for batch in _batches(utts, batch_size):
            waves = [read_utterance(data, u, max_samples=featurizer.max_samples) for u in batch]
            feats = featurizer.batch(waves) if len(batch) > 1 else [featurizer(waves[0])]
            for utt, f in zip(batch, feats):
                f = f.detach().float().cpu()
                if f.ndim != 2 or f.shape[0] == 0:
                    raise AudioError(f"utterance {utt!r}: too short for {featurizer.name} features "
                                     f"({waves[batch.index(utt)].numel()} samples)")
                if not torch.isfinite(f).all():
                    raise AudioError(f"utterance {utt!r}: {featurizer.name} features are not finite")
                writer.write(utt, f.numpy())
                n_frames += int(f.shape[0])
            bar.update(len(batch))
        bar.close()
    stats = {"rank": rank, "nshard": nshard, "utts": len(utts), "frames": n_frames,
             "seconds": round(time.perf_counter() - t0, 2), "fingerprint": fingerprint}
    save_yaml(paths["done"], stats)
    return stats


def shard_statuses(data: DataDir, spec: Dict[str, Any], out_dir: Path, ranks: List[int], nshard: int,
                   compress: bool) -> Dict[int, Optional[str]]:
    """Each rank's :func:`shard_status` against this run's inputs (None: done and current)."""
    return {r: shard_status(shard_paths(out_dir, r, nshard)["done"],
                            feature_fingerprint(spec, data, shard_utts(data, r, nshard), compress)) for r in ranks}


def merge_shards(out_dir: Path, nshard: int, spec: Dict[str, Any], current: List[int],
                 statuses: Callable[[List[int]], Dict[int, Optional[str]]]) -> Optional[Path]:
    """Write feats.scp + feats.yaml once every shard is done from this run's inputs; return feats.scp or None.

    ``current``: ranks known done and current; ``statuses(ranks)`` checks the others (only once all are done).
    """
    others = [r for r in range(nshard) if r not in current]
    if not all(shard_paths(out_dir, r, nshard)["done"].is_file() for r in others) or \
            any(why is not None for why in statuses(others).values()):
        return None
    shards = [shard_paths(out_dir, r, nshard) for r in range(nshard)]
    lines, n_utts, n_frames = [], 0, 0
    for p in shards:
        stats = load_yaml(p["done"])
        n_utts, n_frames = n_utts + stats["utts"], n_frames + stats["frames"]
        if stats["utts"]:
            lines += [f"{k} {loc}\n" for k, loc in read_scp_entries(p["scp"])]
    feats_scp = out_dir / "feats.scp"
    atomic_write_text(feats_scp, "".join(lines))
    if lines:
        write_num_frames(feats_scp)  # frame counts for length-sorted batching without reading the data
    save_yaml(out_dir / "feats.yaml", {**spec, "num_utts": n_utts, "num_frames": n_frames, "nshard": nshard})
    return feats_scp


def _worker(data_dir: str, feature: str, feature_kwargs: Dict[str, Any], out_dir: str, rank: int, nshard: int,
            batch_size: int, compress: bool) -> Dict[str, Any]:
    torch.set_num_threads(1)
    data = load_data_dir(data_dir)
    featurizer = build_featurizer(feature, **feature_kwargs)
    return dump_shard(data, featurizer, Path(out_dir), rank, nshard, batch_size, compress=compress)


def layer_dirs(out_dir: str, layers: List[int]) -> List[str]:
    """One output folder per layer: ``out_dir`` with ``{layer}`` filled in, else ``out_dir/layer<N>``."""
    if "{layer}" in out_dir:
        return [out_dir.replace("{layer}", str(n)) for n in layers]
    return [str(Path(out_dir) / f"layer{n}") for n in layers]


def dump_layers(data_dir: str, feature: str, out_dir: str, layers: List[int], **kwargs: Any) -> Dict[str, Any]:
    """Dump several layers, each to its own feature folder (a plain feats.scp/feats.yaml with its ``layer``).

    Each layer is its own pass of the model (layers past it are never run), so k-means, heads and
    file formats stay those of one layer; the multi-stream ASR reads the folders as a comma list.
    """
    if len(set(layers)) != len(layers):
        raise ValueError(f"--layer {layers}: a layer is given twice")
    t0 = time.perf_counter()
    outs = layer_dirs(out_dir, layers)
    summaries = [dump_features(data_dir, feature, out, layer=n, **kwargs) for n, out in zip(layers, outs)]
    return {"layers": ",".join(map(str, layers)), "seconds": round(time.perf_counter() - t0, 1),
            "output": ",".join(s["output"] for s in summaries)}


def dump_features(data_dir: str, feature: str, out_dir: str, nj: int = 1, shard: Optional[str] = None,
                  batch_size: int = 1, merge: Optional[int] = None, compress: bool = False,
                  **feature_kwargs: Any) -> Dict[str, Any]:
    """Dump features of a data dir: all shards with ``nj`` processes, one ``shard`` (i/N), or ``merge`` N done ones.

    ``layer`` as a list of several layers dumps each to its own folder (:func:`dump_layers`); ``compress`` writes
    Kaldi two-byte compressed matrices (half the disk and reading; readers get float32).
    """
    layer = feature_kwargs.get("layer")
    if isinstance(layer, (list, tuple)):
        if len(layer) > 1:
            rest = {k: v for k, v in feature_kwargs.items() if k != "layer"}
            return dump_layers(data_dir, feature, out_dir, list(layer), nj=nj, shard=shard, batch_size=batch_size,
                               merge=merge, compress=compress, **rest)
        feature_kwargs["layer"] = layer[0]
    t0 = time.perf_counter()
    data = load_data_dir(data_dir)  # validate before any work starts
    out = check_output(out_dir, "--out-dir", is_dir=True)
    featurizer = build_featurizer(feature, **feature_kwargs)
    spec = {**featurizer.spec(), "data_dir": str(Path(data_dir).resolve())}
    ranks, nshard = plan_shards(len(data), nj, shard, merge)
    stems = [shard_paths(out, r, nshard)["done"].stem for r in ranks] if shard is not None else []
    with exit_on_signals(), locked_output(out, stems, whole=shard is None):
        if merge is not None:  # every shard checked here, so the merge below checks none again
            require_done({shard_paths(out, r, nshard)["done"]: why for r, why in
                          shard_statuses(data, spec, out, list(range(nshard)), nshard, compress).items()})
        todo = [r for r, why in shard_statuses(data, spec, out, ranks, nshard, compress).items() if why is not None]
        if todo:
            remove_merged(out, MERGED)
        if len(todo) > 1:
            run_workers(_worker, [(f"shard {r}/{nshard}", (data_dir, feature, feature_kwargs, str(out), r, nshard,
                                                           batch_size, compress)) for r in todo])
        else:
            for r in todo:
                dump_shard(data, featurizer, out, r, nshard, batch_size, compress=compress)
        feats_scp = merge_shards(out, nshard, spec, ranks if merge is None else list(range(nshard)),
                                 lambda rs: shard_statuses(data, spec, out, rs, nshard, compress))
    summary = {"shards": nshard if merge is not None else len(ranks), "seconds": round(time.perf_counter() - t0, 1),
               "output": str(feats_scp or out / "shards")}
    if feats_scp is not None:
        meta = load_yaml(out / "feats.yaml")
        summary.update(utts=meta["num_utts"], frames=meta["num_frames"])
    return summary
