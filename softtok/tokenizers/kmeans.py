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
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from softtok.common import default_device, positive_int
from softtok.tokenizers.fileio import atomic_files, load_yaml, sha256_of, write_npy, yaml_text

logger = logging.getLogger(__name__)

BACKENDS = ("faiss", "sklearn", "torch")
# Keys of a feature spec that must agree between features and a codebook.
SPEC_KEYS = ("feature", "dim", "layer", "checkpoint", "num_ceps", "num_mel_bins", "deltas", "cmn")
LOAD_KEYS = ("path", "sha256")  # meta that :meth:`Codebook.load` adds; never written to the .yaml


class CodebookMismatch(ValueError):
    """Features and codebook come from different feature extractors or dims."""


def squared_distances(x: torch.Tensor, centroids: torch.Tensor, c_sqnorm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """‖x − c‖² for all frames and centroids (T, K) via the matmul form, clamped ≥ 0: float32, or float64 for
    float64 centroids.

    The matmul form loses about eps·‖x‖² (float32 eps ≈ 6e-8): centre x and c on the centroids' mean first
    (:meth:`Codebook.distances` does) when features share a large offset, as SSL features do.
    """
    x = x.double() if centroids.dtype == torch.float64 else x.float()
    if c_sqnorm is None:
        c_sqnorm = (centroids * centroids).sum(1)
    d2 = (x * x).sum(1, keepdim=True) - 2.0 * (x @ centroids.T) + c_sqnorm[None, :]
    return d2.clamp_min_(0.0)


def finite_distances(d2: torch.Tensor, x: torch.Tensor, exact: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``d2`` when it is finite; else ``exact()`` (the float64 distances, which no finite float32 input overflows)
    where float32 overflowed, or a one-line error where the features themselves hold NaN or infinite values."""
    if bool(torch.isfinite(d2).all()):
        return d2
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"features with NaN or infinite values ({int((~torch.isfinite(x)).sum())} of {x.numel()}) "
                         "cannot be assigned to centroids")
    return exact()


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
        """Squared distances (T, K) of frames to all centroids: float32, or float64 where float32 would overflow
        (magnitudes past ~1e19); NaN or infinite features are a one-line error."""
        self.check_features(x)
        mean, c, csq = self.centred(x.device)
        centred = x.float() - mean
        return finite_distances(squared_distances(centred, c, csq), x,
                                lambda: squared_distances((x.double() - mean.double()), c.double()))

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Hard token ids (T,): the nearest centroid of each frame."""
        return self.distances(x).argmin(dim=1)

    def save(self, path: os.PathLike | str) -> None:
        """Write ``path`` (.npy) and its ``.yaml`` sibling together (:func:`~softtok.tokenizers.fileio.atomic_files`:
        both or neither; an interruption between the renames leaves the .npy alone, which :meth:`load` names)."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path}: is a directory; give the codebook's .npy file name")
        if not np.isfinite(self.centroids).all():
            raise ValueError(f"{path}: refusing to write NaN or infinite centroids")
        meta = {k: v for k, v in self.meta.items() if k not in LOAD_KEYS}
        text = yaml_text({"n_clusters": self.n_clusters, "dim": self.dim, **meta})
        with atomic_files(path, path.with_suffix(".yaml")) as (npy_tmp, yaml_tmp):
            write_npy(npy_tmp, self.centroids.astype(np.float32))
            yaml_tmp.write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: os.PathLike | str) -> "Codebook":
        """Read a codebook; the .yaml sibling is optional for centroids made elsewhere (a warning says so). ``meta``
        gains ``path`` and ``sha256`` (of the .npy: what a trained model and token shards record, to know the
        codebook by content)."""
        path = Path(path)
        meta_path = path.with_suffix(".yaml")
        if not path.is_file():
            orphan = f" ({meta_path.name} is there without it: an interrupted write? learn it again)" \
                if meta_path.is_file() and path.suffix == ".npy" else ""
            raise FileNotFoundError(f"{path}: codebook not found{orphan}")
        try:
            centroids = np.load(path)
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(f"{path}: not a .npy array (truncated?): {exc}") from None
        if centroids.ndim != 2 or not np.isfinite(centroids).all():
            raise ValueError(f"{path}: expected finite centroids of shape (K, D), got {centroids.shape}")
        meta = load_yaml(meta_path) if meta_path.is_file() else {}
        if not meta:
            logger.warning("%s: no %s beside it (centroids made elsewhere, or an interrupted write): its feature "
                           "spec is not checked", path, meta_path.name)
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
    defaults at equal or lower inertia; 50 iterations gained < 1.5 % inertia at 2.9–4.8× the time.

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
# Learner options that count something (iterations, frames per batch, restarts): a whole number >= 1.
COUNT_OPTIONS = ("niter", "batch", "max_iter", "batch_size", "n_init", "max_no_improvement")


def check_options(backend: str, options: Dict[str, Any]) -> None:
    """Refuse an unknown backend or an option the backend's learner does not take (before frames are loaded)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; choose from {list(BACKENDS)}")
    learn = LEARNERS[backend]
    accepted = [name for name in inspect.signature(learn).parameters if name not in ("x", "k", "seed")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"k-means backend {backend!r} has no option {unknown[0]!r}; it takes {accepted}")
    for name in COUNT_OPTIONS:
        if name in options and not (name == "max_no_improvement" and options[name] is None):
            positive_int(options[name], f"k-means option {name}")


MAX_SQNORM = float(np.finfo(np.float32).max) / 4  # ‖x‖² + 2‖x‖‖c‖ + ‖c‖² stays within float32 below it


def check_magnitude(x: np.ndarray, batch: int = 65536) -> None:
    """Refuse frames whose squared norm float32 k-means cannot hold (its distances would overflow to inf − inf:
    faiss aborts the process, the others return garbage); NaN or infinite frames too. Checked in float64 blocks."""
    peak = 0.0
    for i in range(0, len(x), batch):
        block = np.asarray(x[i:i + batch], dtype=np.float64)
        sqnorms = (block * block).sum(1)
        if not np.isfinite(sqnorms).all():
            raise ValueError("k-means: frames with NaN or infinite values")
        peak = max(peak, float(sqnorms.max(initial=0.0)))
    if peak >= MAX_SQNORM:
        raise ValueError(f"k-means: frames of squared norm up to {peak:.3g} (float32 distances overflow past "
                         f"{MAX_SQNORM:.3g}); scale the features down")


def learn_kmeans(x: np.ndarray, k: int, backend: str = "faiss", seed: int = 0,
                 feature_spec: Optional[Dict[str, Any]] = None, **options: Any) -> Codebook:
    """Learn a codebook of ``k`` centroids from frames ``x`` (N, D) with ``backend``."""
    check_options(backend, options)
    positive_int(k, "the number of clusters K")
    if len(x) < k:
        raise ValueError(f"need at least K={k} frames to learn K centroids, got {len(x)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_magnitude(x)
    start = time.perf_counter()
    centroids = LEARNERS[backend](x, k, seed=seed, **options)
    seconds = time.perf_counter() - start
    if not np.isfinite(centroids).all():
        raise ValueError(f"{backend} k-means gave NaN or infinite centroids (features of magnitude past float32's "
                         "range?); nothing written")
    meta = {"backend": backend, "seed": seed, "options": options, "n_frames": int(len(x)),
            "inertia": inertia(x, centroids), "train_seconds": round(seconds, 3),
            "feature_spec": feature_spec or {}}
    return Codebook(centroids, meta)
