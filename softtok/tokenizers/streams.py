"""Token streams: the codebooks a head assigns over, as squared distances of shape (T, S, K).

A *source* is one feats.scp with one codebook file; sources are stacked column-wise frame by frame. A source's
codebook is one stream (k-means, e.g. one SSL layer of ``--layer 9,15,21,22``) or, when its metadata says
``per_channel: true`` (dMel), one stream of 1-D centres per feature channel. :class:`StreamCodebooks` gives every
frame's squared distance to every stream's centres, one (T, S_i, K_i) tensor per source, which the heads turn
into tokens; one stream is the common case.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from softtok.tokenizers.kmeans import Codebook, finite_distances

SEP = ","  # separates the sources of --feats / --kmeans / --dump: "a/feats.scp,b/feats.scp"
FAISS_TOPK_MIN_K = 4096  # from this codebook size on, top-k uses a faiss search on CPU


def split_list(spec: str | Sequence[str] | None) -> List[str]:
    """``"a,b"`` or ``["a", "b"]`` → ``["a", "b"]`` (None → [])."""
    if spec is None:
        return []
    items = spec.split(SEP) if isinstance(spec, str) else [str(s) for s in spec]
    items = [s.strip() for s in items]
    if any(not s for s in items):
        raise ValueError(f"empty item in the list {spec!r} (items are separated by {SEP!r})")
    return items


def per_source(value: Any, n_sources: int, name: str) -> List[Any]:
    """A scalar for every source, or a list with one value per source (a wrong length is an error)."""
    if not isinstance(value, (list, tuple)):
        return [value] * n_sources
    if len(value) != n_sources:
        raise ValueError(f"{name}: {len(value)} values for {n_sources} feature streams")
    return list(value)


def is_per_channel(codebook: Optional[Codebook]) -> bool:
    """True for a codebook file holding one 1-D codebook per feature channel (its columns), as dMel's."""
    return codebook is not None and bool(codebook.meta.get("per_channel"))


def channel_sqdist(codebook: Codebook, x: torch.Tensor) -> torch.Tensor:
    """(T, C, K) squared distances of each frame's channel c to the K 1-D centres of a per-channel codebook (float64
    where float32 would overflow, as :meth:`Codebook.distances`)."""
    codebook.check_features(x)
    centres = torch.from_numpy(codebook.centroids).to(x.device)  # (K, C)
    return finite_distances((x.float()[:, :, None] - centres.T[None]) ** 2, x,
                            lambda: (x.double()[:, :, None] - centres.T[None].double()) ** 2)


def source_sqdist(codebook: Codebook, x: torch.Tensor) -> torch.Tensor:
    """(T, S, K) squared distances of one source's frames: S = 1 for k-means, one stream per channel if per-channel."""
    if is_per_channel(codebook):
        return channel_sqdist(codebook, x)
    return codebook.distances(x)[:, None, :]


def nearest_sqdist(codebook: Codebook, x: torch.Tensor) -> torch.Tensor:
    """Squared distance of each frame (T,), or each frame and channel (T·C,) if per-channel, to its nearest centre."""
    return source_sqdist(codebook, x).min(dim=2).values.reshape(-1)


def stream_sizes(codebook: Codebook) -> List[int]:
    """K of each stream of one codebook file: [K], or [K] * C for a per-channel codebook."""
    return [codebook.n_clusters] * (codebook.dim if is_per_channel(codebook) else 1)


def stream_centroids(codebook: Codebook) -> List[np.ndarray]:
    """The centres of each stream of one codebook file: itself, or one (K, 1) column per channel."""
    if not is_per_channel(codebook):
        return [codebook.centroids]
    return [np.ascontiguousarray(codebook.centroids[:, c:c + 1]) for c in range(codebook.dim)]


class StreamCodebooks:
    """The codebooks of a model's input sources, one per source, read as token streams.

    ``split`` cuts a stacked (T, Σ D_i) matrix into the sources' columns, ``sqdist`` gives each source's
    (T, S_i, K_i) squared distances and ``nearest`` the k nearest centres of every stream (faiss on CPU from
    ``FAISS_TOPK_MIN_K`` centroids on, unless ``use_faiss`` says otherwise).
    """

    def __init__(self, codebooks: Sequence[Codebook], source_dims: Optional[Sequence[int]] = None):
        self.sources = list(codebooks)
        if not self.sources:
            raise ValueError("no codebook given")
        dims = [cb.dim for cb in self.sources] if source_dims is None else [int(d) for d in source_dims]
        if len(dims) != len(self.sources):
            raise ValueError(f"{len(self.sources)} codebooks (--kmeans) for {len(dims)} feature streams (--feats)")
        for i, (cb, dim) in enumerate(zip(self.sources, dims)):
            if cb.dim != dim:
                where = f"stream {i + 1}: " if len(dims) > 1 else ""
                raise ValueError(f"{where}codebook {cb.meta.get('path', '')} has dim {cb.dim}, features {dim}")
        self.source_dims = dims
        self.sizes = [k for cb in self.sources for k in stream_sizes(cb)]
        self._faiss: Dict[int, Any] = {}

    @property
    def n_streams(self) -> int:
        return len(self.sizes)

    def centroids(self) -> List[np.ndarray]:
        """Every stream's centres, in stream order (what a token table is initialised from)."""
        return [c for cb in self.sources for c in stream_centroids(cb)]

    def split(self, feats: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The sources' columns of a stacked (T, Σ D_i) matrix (a wrong shape is a one-line error)."""
        return split_sources(feats, self.source_dims)

    def sqdist(self, feats: torch.Tensor) -> List[torch.Tensor]:
        """Each source's (T, S_i, K_i) squared distances."""
        return [source_sqdist(cb, x) for cb, x in zip(self.sources, self.split(feats))]

    def nearest(self, feats: torch.Tensor, k: int,
                use_faiss: Optional[bool] = None) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Each source's k nearest centres per stream, ascending: (ids (T, S_i, k), d² (T, S_i, k))."""
        out = []
        for i, (cb, x) in enumerate(zip(self.sources, self.split(feats))):
            faiss_here = use_faiss
            if faiss_here is None:
                faiss_here = x.device.type == "cpu" and cb.n_clusters >= FAISS_TOPK_MIN_K
            d2 = None
            if faiss_here and not is_per_channel(cb):
                ids, d2 = self._faiss_nearest(i, x, k)
                d2 = d2 if _faiss_exact(ids, d2) else None  # float32 overflow in faiss: the exact path below
            if d2 is None:
                d2, ids = torch.topk(source_sqdist(cb, x), k, dim=2, largest=False, sorted=True)
            out.append((ids, d2))
        return out

    def _faiss_nearest(self, i: int, x: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        import faiss

        cb = self.sources[i]
        cb.check_features(x)
        mean, centred, _ = cb.centred("cpu")  # searched from the centroids' mean, as Codebook.distances
        if i not in self._faiss:
            self._faiss[i] = faiss.IndexFlatL2(cb.dim)
            self._faiss[i].add(np.ascontiguousarray(centred.numpy()))
        d2, ids = self._faiss[i].search(np.ascontiguousarray((x.cpu().float() - mean).numpy()), k)
        return torch.from_numpy(ids).long()[:, None, :], torch.from_numpy(d2).clamp_min(0.0)[:, None, :]


def _faiss_exact(ids: torch.Tensor, d2: torch.Tensor) -> bool:
    """Whether a faiss search stayed within float32: no missing result (id −1) and no distance at float32's top."""
    return bool((ids >= 0).all()) and bool((d2 < torch.finfo(torch.float32).max).all())


def split_sources(feats: torch.Tensor, dims: Sequence[int]) -> Tuple[torch.Tensor, ...]:
    """The per-source columns of a stacked (T, Σ dims) matrix; a wrong shape is a one-line error.

    One source passes through unchecked: its codebook (or model) checks the dim with its own message.
    """
    if len(dims) == 1:
        return (feats,)
    if feats.ndim != 2 or feats.shape[1] != sum(dims):
        raise ValueError(f"{len(dims)}-source head: features of shape {tuple(feats.shape)}, expected (T, {sum(dims)})")
    return torch.split(feats, list(dims), dim=1)


def stack_sources(mats: Sequence[np.ndarray], names: Sequence[str], utt: str) -> np.ndarray:
    """Frame-wise concatenation of one utterance's matrices from several sources (frame counts must agree)."""
    if len(mats) == 1:
        return mats[0]
    check_frame_counts([len(m) for m in mats], names, utt)
    return np.concatenate(mats, axis=1)


def check_frame_counts(counts: Sequence[int], names: Sequence[str], utt: str) -> None:
    """Stacked sources must give an utterance the same number of frames; a mismatch names the source."""
    for n, name in zip(counts[1:], names[1:]):
        if n != counts[0]:
            raise ValueError(f"{name}: utterance {utt!r} has {n} frames but {names[0]} has {counts[0]}")
