"""The k-means and token-dumping jobs behind ``softtok learn-kmeans`` and ``dump-tokens``.

Like fairseq's simple_kmeans, one short function per job: load features → learn →
save; load features + codebook → head → write tokens.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import default_device, positive_int, run_job, setup_logging
from softtok.tokenizers.dump_features import plan_shards, remove_merged, require_done, shard_slice
from softtok.tokenizers.fileio import (ArkScpWriter, atomic_path, atomic_write_text, check_output, iter_scp,
                                       load_matrix, load_num_frames, load_yaml, read_scp_entries, save_yaml)
from softtok.tokenizers.heads import TokenInput, add_head_args, build_head, head_conf_of
from softtok.tokenizers.kmeans import Codebook, check_options, learn_kmeans
from softtok.tokenizers.outdir import locked_output, remove_stale_temps
from softtok.tokenizers.provenance import scp_fingerprint, shard_status
from softtok.tokenizers.streams import is_per_channel
from softtok.tokenizers.workers import exit_on_signals, run_workers

logger = logging.getLogger(__name__)


_COUNT_KEYS = ("data_dir", "num_utts", "num_frames", "nshard")


def feature_spec_of(feats_scp: str | Path) -> Dict[str, Any]:
    """What identifies the features of a feats.scp: its feats.yaml less the counts (empty if absent)."""
    meta_path = Path(feats_scp).with_name("feats.yaml")
    meta = load_yaml(meta_path) if meta_path.is_file() else {}
    return {k: v for k, v in meta.items() if k not in _COUNT_KEYS}


def load_frames(feats_scp: str | Path, portion: float = 1.0, seed: int = 0) -> np.ndarray:
    """Stack the frames of a random ``portion`` of a feats.scp's utterances (in scp order) into one array.

    Only the chosen utterances are read, straight into an array sized from ``utt2num_frames`` (or the ark
    headers), so peak memory is the result itself, not twice it (at full scale that is ~22 GB, not ~44).
    """
    if not 0 < portion <= 1:
        raise ValueError(f"--portion must be in (0, 1], got {portion}")
    entries = read_scp_entries(feats_scp)
    if portion < 1:
        rng = np.random.default_rng(seed)
        keep = max(1, int(round(portion * len(entries))))
        chosen = set(rng.choice(len(entries), size=keep, replace=False).tolist())
        entries = [entry for i, entry in enumerate(entries) if i in chosen]
    num_frames = load_num_frames(feats_scp)
    total = sum(num_frames[key] for key, _ in entries)
    out: Optional[np.ndarray] = None
    row = 0
    with logging_redirect_tqdm():
        for key, location in tqdm(entries, desc="load features", unit="utt"):
            mat = load_matrix(feats_scp, key, location)
            if out is None:
                out = np.empty((total, mat.shape[1]), dtype=np.float32)
            if mat.shape != (num_frames[key], out.shape[1]):
                raise ValueError(f"{feats_scp}: {key!r} is {mat.shape[0]}x{mat.shape[1]}, expected "
                                 f"{num_frames[key]} frames of dim {out.shape[1]}")
            out[row:row + len(mat)] = mat
            row += len(mat)
    assert out is not None and row == total
    return out


def run_learn_kmeans(feats: str, n_clusters: int, backend: str, out: str, portion: float = 1.0,
                     seed: int = 0, **options: Any) -> Dict[str, Any]:
    """Learn a codebook from a feats.scp and save ``out`` (.npy) + ``.yaml``."""
    t0 = time.perf_counter()
    check_options(backend, options)
    positive_int(n_clusters, "--n-clusters")
    check_output(out, "--out")
    check_output(Path(out).with_suffix(".yaml"), "--out (its .yaml)")
    spec = feature_spec_of(feats)
    x = load_frames(feats, portion, seed)
    logger.info("learning K=%d %s k-means on %d frames of dim %d", n_clusters, backend, *x.shape)
    codebook = learn_kmeans(x, n_clusters, backend=backend, seed=seed, feature_spec=spec, **options)
    codebook.meta.update(portion=portion, feats=str(Path(feats).resolve()))
    for name in (Path(out).name, Path(out).with_suffix(".yaml").name):  # a killed earlier run's halves
        remove_stale_temps(Path(out).parent, prefix=f"{name}.tmp.")
    codebook.save(out)
    return {"frames": int(len(x)), "K": n_clusters, "inertia": round(codebook.meta["inertia"], 2),
            "seconds": round(time.perf_counter() - t0, 1), "output": str(out)}


def topk_matrix(tokens: TokenInput) -> np.ndarray:
    """The soft top-k ark layout of a one-stream input: float32 (T, 2k), columns [ids (exact integers) | weights]."""
    one = tokens.single_stream()
    return torch.cat([one["ids"].float(), one["weights"]], dim=1).cpu().numpy()


def token_matrix(tokens: TokenInput) -> np.ndarray:
    """The ark matrix of a one-stream soft or continuous input: (T, K) probabilities, top-k or (T, D) features."""
    if tokens.kind == "topk":
        return topk_matrix(tokens)
    return tokens.single_stream()["probs" if tokens.kind == "probs" else "feats"].cpu().numpy()


def split_topk_matrix(matrix: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`topk_matrix`: (ids int64 (T, k), weights float32 (T, k))."""
    k = matrix.shape[1] // 2
    return matrix[:, :k].astype(np.int64), matrix[:, k:].astype(np.float32)


def dedup(ids: np.ndarray) -> np.ndarray:
    """Collapse runs of repeated ids (HuBERT-style unit deduplication)."""
    if len(ids) == 0:
        return ids
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return ids[keep]


LAYOUTS = {"hard": "text: utt id id ...", "probs": "ark float32 (T, K) probabilities",
           "topk": "ark float32 (T, 2k): [:, :k] ids (exact integers), [:, k:] weights summing to 1",
           "feats": "ark float32 (T, D) features"}


def token_shard_paths(out_dir: Path, rank: int, nshard: int, hard: bool) -> Dict[str, Path]:
    """One token shard's files: ``shards/tokens_{rank}_{nshard}.{txt|ark,scp}`` and its ``.done`` marker."""
    stem = out_dir / "shards" / f"tokens_{rank}_{nshard}"
    return {k: stem.with_suffix("." + k) for k in (("txt", "done") if hard else ("ark", "scp", "done"))}


class TokenJob:
    """One dump-tokens job: codebook + head + settings; writes shards and merges them."""

    def __init__(self, feats: str, kmeans: str, head: str, out_dir: str, conf: Dict[str, Any], dedup_ids: bool):
        self.feats, self.out = feats, Path(out_dir)
        self.codebook = Codebook.load(kmeans)
        self.codebook.check_spec(feature_spec_of(feats), source=str(feats))
        if is_per_channel(self.codebook):
            raise ValueError(f"{kmeans}: one 1-D codebook per channel (dMel); dump-tokens writes one token stream "
                             "(models read dMel features through their own head)")
        self.head_fn = build_head(head, self.codebook, **conf)
        self.hard, self.dedup = head == "hard", dedup_ids
        kind = "hard" if self.hard else {"soft": "topk" if conf.get("top_k") else "probs", "continuous": "feats"}[head]
        self.meta = {"head": head, "settings": self.head_fn.settings(), "tau": conf.get("tau"),
                     "top_k": conf.get("top_k"), "dedup": dedup_ids, "layout": LAYOUTS[kind],
                     "kmeans": str(Path(kmeans).resolve()), "n_clusters": self.codebook.n_clusters,
                     "feats": str(Path(feats).resolve())}
        # What a shard depends on, by content: head settings, the codebook's bytes, the features behind feats.scp.
        self.fingerprint = {"head": self.meta["settings"], "dedup": dedup_ids,
                            "codebook_sha256": self.codebook.meta["sha256"], "features": scp_fingerprint(feats)}

    def paths(self, rank: int, nshard: int) -> Dict[str, Path]:
        return token_shard_paths(self.out, rank, nshard, self.hard)

    def status(self, marker: Path) -> Optional[str]:
        """None when the shard is done from the same head, codebook content and features, else why not."""
        return shard_status(marker, self.fingerprint)

    def dump_shard(self, rank: int, nshard: int, progress: bool = True) -> Dict[str, Any]:
        """Write one shard (a contiguous slice of the feats.scp entries) unless it is done from the same inputs."""
        paths = self.paths(rank, nshard)
        status = self.status(paths["done"])
        if status is None:
            logger.info("token shard %d/%d already done: %s", rank, nshard, paths["done"])
            return load_yaml(paths["done"])
        if paths["done"].exists():
            logger.info("token shard %d/%d %s; recomputing it", rank, nshard, status)
            paths["done"].unlink()
        start, end = shard_slice(len(read_scp_entries(self.feats)), rank, nshard)
        device = default_device()  # distances on the GPU when one is visible
        items = tqdm(iter_scp(self.feats, start, end), total=end - start, disable=not progress, unit="utt",
                     desc=f"tokens ({self.head_fn.settings()}) shard {rank}/{nshard}")
        n_utts = n_frames = 0
        with logging_redirect_tqdm():
            if self.hard:
                with atomic_path(paths["txt"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
                    for key, mat in items:
                        tokens = self.head_fn(_as_tensor(mat, key, self.codebook, device))
                        ids = tokens.single_stream()["ids"].cpu().numpy()
                        ids = dedup(ids) if self.dedup else ids
                        f.write(key + " " + " ".join(map(str, ids.tolist())) + "\n")
                        n_utts, n_frames = n_utts + 1, n_frames + len(mat)
            else:
                with ArkScpWriter(paths["ark"], paths["scp"]) as writer:
                    for key, mat in items:
                        tokens = self.head_fn(_as_tensor(mat, key, self.codebook, device))
                        writer.write(key, token_matrix(tokens))
                        n_utts, n_frames = n_utts + 1, n_frames + len(mat)
        stats = {"rank": rank, "nshard": nshard, "utts": n_utts, "frames": n_frames, "fingerprint": self.fingerprint}
        save_yaml(paths["done"], stats)
        return stats

    def merge(self, nshard: int, strict: bool = False) -> Optional[Path]:
        """Concatenate the shards into ``tokens.txt`` / ``tokens.scp`` + ``tokens.yaml`` once all are done.

        Returns None while a shard is missing, or raises when ``strict`` (``--merge N``).
        """
        shards = [self.paths(r, nshard) for r in range(nshard)]
        statuses = {p["done"]: self.status(p["done"]) for p in shards}
        if strict:
            require_done(statuses)
        if any(why is not None for why in statuses.values()):
            return None
        output = self.out / ("tokens.txt" if self.hard else "tokens.scp")
        text = "".join(p["txt" if self.hard else "scp"].read_text(encoding="utf-8") for p in shards)
        atomic_write_text(output, text)
        n_utts = sum(load_yaml(p["done"])["utts"] for p in shards)
        save_yaml(self.out / "tokens.yaml", {**self.meta, "num_utts": n_utts, "nshard": nshard})
        return output


def _token_worker(job_args: Tuple, rank: int, nshard: int) -> Dict[str, Any]:
    torch.set_num_threads(1)
    return TokenJob(*job_args).dump_shard(rank, nshard)


MERGED_TOKENS = ("tokens.txt", "tokens.scp", "tokens.yaml")


def run_dump_tokens(feats: str, kmeans: str, head: str, out_dir: str, tau: Optional[float] = None,
                    top_k: Optional[int] = None, dedup_ids: bool = False,
                    head_conf: Optional[Dict[str, Any]] = None, nj: int = 1, shard: Optional[str] = None,
                    merge: Optional[int] = None) -> Dict[str, Any]:
    """Write tokens of every utterance: ``tokens.txt`` (hard) or ``tokens.scp`` (soft/continuous).

    Sharded like dump-features: ``nj`` local processes, one ``shard`` (i/N) of an array job, or
    ``merge`` N finished shards; shards done from the same head settings, codebook content and features are
    skipped on a re-run, any other is recomputed (the merged files removed first). The folder is locked meanwhile.
    """
    t0 = time.perf_counter()
    check_output(out_dir, "--out-dir", is_dir=True)
    conf = {**(head_conf or {}), **{k: v for k, v in {"tau": tau, "top_k": top_k}.items() if v is not None}}
    job_args = (feats, kmeans, head, out_dir, conf, dedup_ids)
    job = TokenJob(*job_args)
    ranks, nshard = plan_shards(len(read_scp_entries(feats)), nj, shard, merge)
    stems = [job.paths(r, nshard)["done"].stem for r in ranks] if shard is not None else []
    with exit_on_signals(), locked_output(job.out, stems, whole=shard is None):
        todo = [r for r in ranks if job.status(job.paths(r, nshard)["done"]) is not None]
        if todo:
            remove_merged(job.out, MERGED_TOKENS)
        if len(todo) > 1:
            run_workers(_token_worker, [(f"shard {r}/{nshard}", (job_args, r, nshard)) for r in todo])
        else:
            for r in todo:
                job.dump_shard(r, nshard)
        output = job.merge(nshard, strict=merge is not None)
    summary: Dict[str, Any] = {"shards": nshard if merge is not None else len(ranks)}
    if output is not None:
        stats = [load_yaml(job.paths(r, nshard)["done"]) for r in range(nshard)]
        summary.update(utts=sum(s["utts"] for s in stats), frames=sum(s["frames"] for s in stats))
    summary.update(seconds=round(time.perf_counter() - t0, 1), output=str(output or job.out / "shards"))
    return summary


def _as_tensor(mat: np.ndarray, key: str, codebook: Codebook, device: str) -> torch.Tensor:
    codebook.check_features(mat, name=f"utterance {key!r}")
    return torch.from_numpy(np.array(mat, dtype=np.float32)).to(device)  # copy: kaldiio may memory-map


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """``softtok dump-tokens``: its head options come from the head registry."""
    p = argparse.ArgumentParser(prog=prog or "python -m softtok.tokenizers.jobs",
                                description="hard: OUT_DIR/tokens.txt (utt id id ...); soft: OUT_DIR/tokens.{ark,scp} "
                                            "with (T, K) probabilities, or (T, 2k) [ids | weights] with --top-k.")
    p.add_argument("--feats", required=True)
    p.add_argument("--kmeans", required=True, help="codebook .npy")
    add_head_args(p)
    p.add_argument("--dedup", action="store_true", help="collapse repeated hard ids")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--nj", type=int, default=1, help="local parallel jobs (one process per shard)")
    p.add_argument("--shard", help="run only shard i/N (0-based), e.g. for array jobs")
    p.add_argument("--merge", type=int, metavar="N", help="only merge the N shards an array job wrote")
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()

    def job() -> Dict[str, Any]:
        if args.dedup and args.head != "hard":
            raise ValueError("--dedup applies to hard tokens only (soft decoding needs one token per frame)")
        return run_dump_tokens(args.feats, args.kmeans, args.head, args.out_dir, dedup_ids=args.dedup,
                               head_conf=head_conf_of(args), nj=args.nj, shard=args.shard, merge=args.merge)

    return run_job("dump-tokens", job, logger)


if __name__ == "__main__":
    raise SystemExit(main())
