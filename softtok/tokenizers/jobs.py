"""The k-means and token-dumping jobs behind ``softtok learn-kmeans`` and ``dump-tokens``.

Like fairseq's simple_kmeans, one short function per job: load features → learn →
save; load features + codebook → head → write tokens.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.tokenizers.features.base import default_device
from softtok.tokenizers.fileio import ArkScpWriter, atomic_path, iter_scp, load_yaml, read_scp_entries, save_yaml
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.kmeans import Codebook, learn_kmeans

logger = logging.getLogger(__name__)


_COUNT_KEYS = ("data_dir", "num_utts", "num_frames", "nshard")


def feature_spec_of(feats_scp: str | Path) -> Dict[str, Any]:
    """What identifies the features of a feats.scp: its feats.yaml less the counts (empty if absent)."""
    meta_path = Path(feats_scp).with_name("feats.yaml")
    meta = load_yaml(meta_path) if meta_path.is_file() else {}
    return {k: v for k, v in meta.items() if k not in _COUNT_KEYS}


def load_frames(feats_scp: str | Path, portion: float = 1.0, seed: int = 0) -> np.ndarray:
    """Stack the frames of a feats.scp, keeping a random ``portion`` of utterances."""
    if not 0 < portion <= 1:
        raise ValueError(f"--portion must be in (0, 1], got {portion}")
    entries = read_scp_entries(feats_scp)
    if portion < 1:
        rng = np.random.default_rng(seed)
        keep = max(1, int(round(portion * len(entries))))
        chosen = set(rng.choice(len(entries), size=keep, replace=False).tolist())
        keys = {entries[i][0] for i in chosen}
    else:
        keys = None
    mats = []
    with logging_redirect_tqdm():
        for key, mat in tqdm(iter_scp(feats_scp), total=len(entries), desc="load features", unit="utt"):
            if keys is None or key in keys:
                mats.append(np.asarray(mat, dtype=np.float32))
    dims = {m.shape[1] for m in mats}
    if len(dims) != 1:
        raise ValueError(f"{feats_scp}: utterances have different feature dims {sorted(dims)}")
    return np.concatenate(mats)


def run_learn_kmeans(feats: str, n_clusters: int, backend: str, out: str, portion: float = 1.0,
                     seed: int = 0, **options: Any) -> Dict[str, Any]:
    """Learn a codebook from a feats.scp and save ``out`` (.npy) + ``.yaml``."""
    t0 = time.perf_counter()
    spec = feature_spec_of(feats)
    x = load_frames(feats, portion, seed)
    logger.info("learning K=%d %s k-means on %d frames of dim %d", n_clusters, backend, *x.shape)
    codebook = learn_kmeans(x, n_clusters, backend=backend, seed=seed, feature_spec=spec, **options)
    codebook.meta.update(portion=portion, feats=str(Path(feats).resolve()))
    codebook.save(out)
    return {"frames": int(len(x)), "K": n_clusters, "inertia": round(codebook.meta["inertia"], 2),
            "seconds": round(time.perf_counter() - t0, 1), "output": str(out)}


def topk_matrix(tokens: TokenInput) -> np.ndarray:
    """The soft top-k ark layout: float32 (T, 2k), columns [ids (exact integers) | weights]."""
    return torch.cat([tokens.ids.float(), tokens.weights], dim=1).cpu().numpy()


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


def run_dump_tokens(feats: str, kmeans: str, head: str, out_dir: str, tau: Optional[float] = None,
                    top_k: Optional[int] = None, dedup_ids: bool = False,
                    head_conf: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write tokens of every utterance: ``tokens.txt`` (hard) or ``tokens.{ark,scp}`` (soft/continuous)."""
    t0 = time.perf_counter()
    codebook = Codebook.load(kmeans)
    codebook.check_spec(feature_spec_of(feats), source=str(feats))
    conf = {**(head_conf or {}), **{k: v for k, v in {"tau": tau, "top_k": top_k}.items() if v is not None}}
    the_head = build_head(head, codebook, **conf)
    device = default_device()  # distances on the GPU when one is visible
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_utts = n_frames = 0
    entries = read_scp_entries(feats)
    items = tqdm(iter_scp(feats), total=len(entries), desc=f"tokens ({the_head.settings()})", unit="utt")
    with logging_redirect_tqdm():
        if head == "hard":
            output = out / "tokens.txt"
            with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as f:
                for key, mat in items:
                    ids = the_head(_as_tensor(mat, key, codebook, device)).ids.cpu().numpy()
                    ids = dedup(ids) if dedup_ids else ids
                    f.write(key + " " + " ".join(map(str, ids.tolist())) + "\n")
                    n_utts, n_frames = n_utts + 1, n_frames + len(mat)
        else:
            output = out / "tokens.scp"
            with ArkScpWriter(out / "tokens.ark", output) as writer:
                for key, mat in items:
                    tokens = the_head(_as_tensor(mat, key, codebook, device))
                    matrix = {"topk": topk_matrix, "probs": lambda t: t.probs.cpu().numpy(),
                              "feats": lambda t: t.feats.cpu().numpy()}[tokens.kind](tokens)
                    writer.write(key, matrix)
                    n_utts, n_frames = n_utts + 1, n_frames + len(mat)
    layout = {"hard": "text: utt id id ...", "probs": "ark float32 (T, K) probabilities",
              "topk": "ark float32 (T, 2k): [:, :k] ids (exact integers), [:, k:] weights summing to 1",
              "feats": "ark float32 (T, D) features"}
    kind = "hard" if head == "hard" else {"soft": "topk" if conf.get("top_k") else "probs", "continuous": "feats"}[head]
    save_yaml(out / "tokens.yaml", {"head": head, "settings": the_head.settings(), "tau": conf.get("tau"),
                                    "top_k": conf.get("top_k"), "dedup": dedup_ids, "layout": layout[kind],
                                    "kmeans": str(Path(kmeans).resolve()), "n_clusters": codebook.n_clusters,
                                    "feats": str(Path(feats).resolve()), "num_utts": n_utts})
    return {"utts": n_utts, "frames": n_frames, "seconds": round(time.perf_counter() - t0, 1),
            "output": str(output)}


def _as_tensor(mat: np.ndarray, key: str, codebook: Codebook, device: str) -> torch.Tensor:
    codebook.check_features(mat, name=f"utterance {key!r}")
    return torch.from_numpy(np.array(mat, dtype=np.float32)).to(device)  # copy: kaldiio may memory-map
