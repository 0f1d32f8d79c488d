"""k-means codebooks: learning (faiss, sklearn MiniBatchKMeans or torch), file format, assignment.

A codebook is ``<name>.npy`` (centroids, float32 (K, D)) plus ``<name>.yaml`` (K, dim,
feature spec, backend, inertia, ...). Loading checks that features and centroids match.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from softtok.common import default_device
from softtok.tokenizers.fileio import load_yaml, save_npy, save_yaml, sha256_of

logger = logging.getLogger(__name__)

BACKENDS = ("faiss", "sklearn", "torch")
# Keys of a feature spec that must agree between features and a codebook.
SPEC_KEYS = ("feature", "dim", "layer", "checkpoint", "num_ceps", "num_mel_bins", "deltas", "cmn")
LOAD_KEYS = ("path", "sha256")  # meta that :meth:`Codebook.load` adds; never written to the .yaml


class CodebookMismatch(ValueError):
    """Features and codebook come from different feature extractors or dims."""


def squared_distances(x: torch.Tensor, centroids: torch.Tensor, c_sqnorm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """‖x − c‖² for all frames and centroids (T, K), float32 via the matmul form, clamped ≥ 0.

    The matmul form loses about eps·‖x‖² (float32 eps ≈ 6e-8): centre x and c on the centroids' mean first
    (:meth:`Codebook.distances` does) when features share a large offset, as SSL features do.
    """
    x = x.float()
    if c_sqnorm is None:
        c_sqnorm = (centroids * centroids).sum(1)
    d2 = (x * x).sum(1, keepdim=True) - 2.0 * (x @ centroids.T) + c_sqnorm[None, :]
    return d2.clamp_min_(0.0)


def centre_of(centroids: np.ndarray) -> np.ndarray:
    """The centroids' mean (D,) float32, computed in float64: the origin distances are computed from."""
    return centroids.astype(np.float64).mean(0).astype(np.float32)


@dataclass
class Codebook:
    """Centroids (K, D) float32 and the metadata that says where they came from."""

    centroids: np.ndarray
    meta: Dict[str, Any] = field(default_factory=dict)
    _cache: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def tensors(self, device: str | torch.device = "cpu"):
        """Centroids and their squared norms on ``device`` (cached)."""
        key = str(device)
        if key not in self._cache:
            c = torch.from_numpy(self.centroids).to(device)
            self._cache[key] = c
            self._cache[key + ":sq"] = (c * c).sum(1)
        return self._cache[key], self._cache[key + ":sq"]

    def centred(self, device: str | torch.device = "cpu"):
        """(mean (D,), centroids − mean (K, D), their squared norms (K,)) on ``device`` (cached): distances from
        this origin keep float32 exact to ~1e-7 relative however large the features' common offset."""
        key = f"{device}:centred"
        if key not in self._cache:
            mean = centre_of(self.centroids)
            c = torch.from_numpy(self.centroids - mean).to(device)
            self._cache[key] = (torch.from_numpy(mean).to(device), c, (c * c).sum(1))
        return self._cache[key]

    def check_features(self, feats: torch.Tensor | np.ndarray, name: str = "features") -> None:
        """Refuse a (T, D) matrix whose dim differs from the centroids'."""
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise CodebookMismatch(f"{name}: shape {tuple(feats.shape)} does not match codebook dim {self.dim}")

    def check_spec(self, spec: Dict[str, Any], source: str = "features") -> None:
        """Refuse features whose feature spec (name, layer, checkpoint, dim, ...) differs."""
        mine = self.meta.get("feature_spec") or {}
        for key in SPEC_KEYS:
            if key in mine and key in spec and mine[key] != spec[key]:
                raise CodebookMismatch(
                    f"{source}: {key}={spec[key]!r} but codebook {self.meta.get('path', '')} has {key}={mine[key]!r}")
        if "dim" in spec and int(spec["dim"]) != self.dim:
            raise CodebookMismatch(f"{source}: dim {spec['dim']} but codebook dim {self.dim}")

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distances (T, K) of frames to all centroids."""
        self.check_features(x)
        mean, c, csq = self.centred(x.device)
        return squared_distances(x.float() - mean, c, csq)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Hard token ids (T,): the nearest centroid of each frame."""
        return self.distances(x).argmin(dim=1)

    def save(self, path: os.PathLike | str) -> None:
        """Write ``path`` (.npy) and its ``.yaml`` sibling atomically."""
        path = Path(path)
        save_npy(path, self.centroids.astype(np.float32))
        meta = {k: v for k, v in self.meta.items() if k not in LOAD_KEYS}
        save_yaml(path.with_suffix(".yaml"), {"n_clusters": self.n_clusters, "dim": self.dim, **meta})

    @classmethod
    def load(cls, path: os.PathLike | str) -> "Codebook":
        """Read a codebook; the .yaml sibling is optional for centroids made elsewhere. ``meta`` gains ``path`` and
        ``sha256`` (of the .npy: what a trained model and token shards record, to know the codebook by content)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: codebook not found")
        centroids = np.load(path)
        if centroids.ndim != 2 or not np.isfinite(centroids).all():
            raise ValueError(f"{path}: expected finite centroids of shape (K, D), got {centroids.shape}")
        meta = load_yaml(path.with_suffix(".yaml")) if path.with_suffix(".yaml").is_file() else {}
        if meta and (meta.get("n_clusters"), meta.get("dim")) != centroids.shape:
            raise ValueError(f"{path}: centroids {centroids.shape} disagree with {path.with_suffix('.yaml')}")
        meta.update(path=str(path), sha256=sha256_of(path))
        return cls(np.ascontiguousarray(centroids, dtype=np.float32), meta)


def inertia(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> float:
    """Sum of squared distances of frames to their nearest centroid (float64 total)."""
    codebook = Codebook(np.ascontiguousarray(centroids, dtype=np.float32))
    total = 0.0
    for i in range(0, len(x), batch):
        d2 = codebook.distances(torch.from_numpy(np.asarray(x[i:i + batch], dtype=np.float32)))
        total += float(d2.min(dim=1).values.double().sum())
    return total


def kmeans_plusplus_init(x: np.ndarray, k: int, seed: int = 0, sample: int = 40) -> np.ndarray:
    """k-means++ seeds drawn from a random subset of ``sample × k`` frames (cheap, robust start)."""
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    subset = x if len(x) <= sample * k else x[rng.choice(len(x), sample * k, replace=False)]
    centres, _ = kmeans_plusplus(subset, k, random_state=seed)
    return np.ascontiguousarray(centres, dtype=np.float32)


def faiss_gpus(gpu: Optional[bool | int] = None) -> int:
    """How many GPUs faiss k-means uses for ``gpu``: None all visible (0 without any), False/0 none,
    True/-1 all visible (at least one), N exactly N; asking for GPUs faiss cannot see is an error."""
    import faiss

    gpu_build = hasattr(faiss, "StandardGpuResources")  # faiss-cpu lacks the GPU classes
    visible = faiss.get_num_gpus() if gpu_build else 0
    if gpu is None:
        return visible
    if gpu is False or gpu == 0:
        return 0
    if gpu is True or gpu == -1:
        need, asked = max(visible, 1), "all GPUs"
    elif isinstance(gpu, int) and gpu > 0:
        need, asked = gpu, f"{gpu} GPU(s)"
    else:
        raise ValueError(f"faiss k-means: gpu must be true, false or a number of GPUs, got {gpu!r}")
    if need > visible:
        why = f"faiss sees {visible}" if gpu_build else \
            f"this faiss {faiss.__version__} is a CPU-only build (faiss-cpu; to install faiss-gpu see README, GPU)"
        raise ValueError(f"faiss k-means: gpu={gpu!r} asks for {asked} but {why}")
    return need


def learn_faiss(x: np.ndarray, k: int, seed: int = 0, niter: int = 10, init: str = "k-means++",
                gpu: Optional[bool | int] = None) -> np.ndarray:
    """Lloyd k-means with faiss on all given frames, on the GPUs :func:`faiss_gpus` picks (default: all visible).

    ``niter=10``: bench/RESULTS.md measured it ≥ 6× faster than sklearn's MiniBatchKMeans
    defaults at equal or lower inertia; 50 iterations gained < 1.5 % inertia at 5× the time.

    ``init="k-means++"`` seeds from k-means++ (faiss's own random init can leave
    clusters merged); ``"random"`` is faiss's default.
    """
    import faiss

    if init not in ("k-means++", "random"):
        raise ValueError(f"faiss k-means: init must be 'k-means++' or 'random', got {init!r}")
    n_gpus = faiss_gpus(gpu)
    logger.info("faiss k-means on %s", f"{n_gpus} GPU(s)" if n_gpus else "the CPU")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, gpu=n_gpus or False, verbose=False,
                      max_points_per_centroid=max(256, -(-len(x) // k)), spherical=False)
    seeds = kmeans_plusplus_init(x, k, seed) if init == "k-means++" else None
    km.train(np.ascontiguousarray(x, dtype=np.float32), init_centroids=seeds)
    return np.asarray(km.centroids, dtype=np.float32)


def learn_sklearn(x: np.ndarray, k: int, seed: int = 0, max_iter: int = 100, batch_size: int = 10000,
                  n_init: int = 20, max_no_improvement: int = 100) -> np.ndarray:
    """MiniBatchKMeans with the ESPnet/fairseq simple_kmeans defaults."""
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=max_iter, batch_size=batch_size,
                         tol=0.0, max_no_improvement=max_no_improvement, n_init=n_init,
                         reassignment_ratio=0.0, random_state=seed, compute_labels=False)
    km.fit(x)
    return km.cluster_centers_.astype(np.float32)


def kmeans_plusplus_torch(x: torch.Tensor, k: int, seed: int = 0, sample: int = 40) -> torch.Tensor:
    """k-means++ seeds on ``x``'s device from ``sample × k`` random frames, sklearn's greedy rule (2 + ln K
    candidates a step, the one lowering the potential most kept): seconds on a GPU where sklearn takes minutes."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if len(x) > sample * k:
        x = x[torch.randperm(len(x), generator=gen, device=x.device)[:sample * k]]
    trials = 2 + int(math.log(k))
    centres = x.new_empty(k, x.shape[1])
    centres[0] = x[torch.randint(len(x), (1,), generator=gen, device=x.device)[0]]
    closest = squared_distances(x, centres[:1])[:, 0]
    for i in range(1, k):
        weights = closest if bool(closest.sum() > 0) else torch.ones_like(closest)  # all frames already seeds
        candidates = torch.multinomial(weights, trials, replacement=True, generator=gen)
        d2 = torch.minimum(closest[:, None], squared_distances(x, x[candidates]))
        best = int(d2.sum(0).argmin())
        centres[i], closest = x[candidates[best]], d2[:, best]
    return centres


def learn_torch(x: np.ndarray, k: int, seed: int = 0, niter: int = 10, init: str = "k-means++",
                device: Optional[str] = None, batch: int = 65536) -> np.ndarray:
    """Lloyd k-means in torch on ``device`` (default: CUDA when visible), a GPU learner that needs no faiss-gpu.

    As :func:`learn_faiss`: ``niter`` passes over all frames from k-means++ seeds (:func:`kmeans_plusplus_torch`)
    or ``"random"`` frames; an empty cluster keeps its centroid. On CUDA the sums are atomic adds, so runs may
    differ in the last bits.
    """
    if init not in ("k-means++", "random"):
        raise ValueError(f"torch k-means: init must be 'k-means++' or 'random', got {init!r}")
    frames = torch.from_numpy(x).to(device or default_device())
    if init == "k-means++":
        centres = kmeans_plusplus_torch(frames, k, seed)
    else:
        gen = torch.Generator(device=frames.device).manual_seed(seed)
        centres = frames[torch.randperm(len(frames), generator=gen, device=frames.device)[:k]].clone()
    mean = centres.double().mean(0).float()
    centres = centres - mean  # distances from the seeds' mean, batch by batch: exact under a large common offset
    for _ in range(niter):
        sums, counts = torch.zeros_like(centres), torch.zeros(k, device=frames.device)
        c_sqnorm = (centres * centres).sum(1)
        for i in range(0, len(frames), batch):
            part = frames[i:i + batch] - mean
            ids = squared_distances(part, centres, c_sqnorm).argmin(dim=1)
            sums.index_add_(0, ids, part)
            counts += torch.bincount(ids, minlength=k)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return (centres + mean).cpu().numpy().astype(np.float32)


LEARNERS = {"faiss": learn_faiss, "sklearn": learn_sklearn, "torch": learn_torch}


def check_options(backend: str, options: Dict[str, Any]) -> None:
    """Refuse an unknown backend or an option the backend's learner does not take (before frames are loaded)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; choose from {list(BACKENDS)}")
    learn = LEARNERS[backend]
    accepted = [name for name in inspect.signature(learn).parameters if name not in ("x", "k", "seed")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"k-means backend {backend!r} has no option {unknown[0]!r}; it takes {accepted}")


def learn_kmeans(x: np.ndarray, k: int, backend: str = "faiss", seed: int = 0,
                 feature_spec: Optional[Dict[str, Any]] = None, **options: Any) -> Codebook:
    """Learn a codebook of ``k`` centroids from frames ``x`` (N, D) with ``backend``."""
    check_options(backend, options)
    if k < 1 or len(x) < k:
        raise ValueError(f"need at least K={k} frames to learn K centroids, got {len(x)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    start = time.perf_counter()
    centroids = LEARNERS[backend](x, k, seed=seed, **options)
    seconds = time.perf_counter() - start
    meta = {"backend": backend, "seed": seed, "options": options, "n_frames": int(len(x)),
            "inertia": inertia(x, centroids), "train_seconds": round(seconds, 3),
            "feature_spec": feature_spec or {}}
    return Codebook(centroids, meta)
