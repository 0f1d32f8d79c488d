"""Assignment heads: the one place that knows hard tokens from soft ones.

A head maps features (T, D) to a :class:`TokenInput`:
- ``hard``: ids (T,) of the nearest centroid;
- ``soft``: p(k|x) = softmax_k(−‖x − c_k‖² / τ), dense (T, K) or top-k (ids, weights),
  renormalised over the k kept centroids;
- ``continuous``: the features themselves.
τ → 0 gives the hard ids exactly (the same distances decide both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from softtok.tokenizers.kmeans import Codebook

KINDS = ("ids", "probs", "topk", "feats")
FAISS_TOPK_MIN_K = 4096  # above this codebook size top-k uses a faiss search on CPU


@dataclass
class TokenInput:
    """What a model's token embedding consumes; exactly the fields of ``kind`` are set.

    ids: (T,) int64 for ``ids``; (T, k) int64 for ``topk``.
    probs: (T, K) float32 for ``probs``.  weights: (T, k) float32 for ``topk``, rows sum to 1.
    feats: (T, D) float32 for ``feats``.
    """

    kind: str
    ids: Optional[torch.Tensor] = None
    probs: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    feats: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        for t in (self.ids, self.probs, self.feats):
            if t is not None:
                return int(t.shape[0])
        return 0

    def nbytes(self) -> int:
        """Memory held by the tensors (for the dense vs top-k comparison)."""
        return sum(t.numel() * t.element_size() for t in (self.ids, self.probs, self.weights, self.feats)
                   if t is not None)


class Head:
    """Base head: ``__call__(feats (T, D)) -> TokenInput``."""

    name = ""
    needs_codebook = True

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        raise NotImplementedError

    def settings(self) -> str:
        """Short tag for output directory names, e.g. ``soft_tau8_topk32``."""
        return self.name


class HardHead(Head):
    """One-hot tokens: the id of the nearest centroid."""

    name = "hard"

    def __init__(self, codebook: Codebook):
        self.codebook = codebook

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        return TokenInput("ids", ids=self.codebook.assign(feats))


def format_number(x: float) -> str:
    """A number as folder names write it: ``%g`` without the exponent's ``+``."""
    return f"{x:g}".replace("+", "")


class SoftHead(Head):
    """Soft assignment over centroids at temperature ``tau``; ``top_k`` keeps the k nearest."""

    name = "soft"

    def __init__(self, codebook: Codebook, tau: float, top_k: Optional[int] = None,
                 use_faiss: Optional[bool] = None):
        if tau is None or not np.isfinite(tau) or tau <= 0:
            raise ValueError(f"soft head: tau must be a finite number > 0, got {tau!r}")
        if top_k is not None and not 1 <= top_k <= codebook.n_clusters:
            raise ValueError(f"soft head: top_k={top_k} must be in [1, K={codebook.n_clusters}]")
        self.codebook, self.tau, self.top_k = codebook, float(tau), top_k
        self.use_faiss = use_faiss
        self._faiss_index = None

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """−(d² − min d²)/τ: the max logit is exactly 0, so no overflow at any τ."""
        d2 = self.codebook.distances(feats)
        return -(d2 - d2.min(dim=1, keepdim=True).values) / self.tau

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        if self.top_k is None:
            return TokenInput("probs", probs=torch.softmax(self.logits(feats), dim=1))
        ids, d2 = self._nearest(feats, self.top_k)
        weights = torch.softmax(-(d2 - d2[:, :1]) / self.tau, dim=1)
        return TokenInput("topk", ids=ids, weights=weights)

    def _nearest(self, feats: torch.Tensor, k: int):
        """The k nearest centroids, ascending by distance: (ids (T, k), d² (T, k))."""
        use_faiss = self.use_faiss
        if use_faiss is None:
            use_faiss = feats.device.type == "cpu" and self.codebook.n_clusters >= FAISS_TOPK_MIN_K
        if use_faiss:
            return self._faiss_nearest(feats, k)
        d2 = self.codebook.distances(feats)
        d2k, ids = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        return ids, d2k

    def _faiss_nearest(self, feats: torch.Tensor, k: int):
        import faiss

        self.codebook.check_features(feats)
        if self._faiss_index is None:
            self._faiss_index = faiss.IndexFlatL2(self.codebook.dim)
            self._faiss_index.add(self.codebook.centroids)
        d2, ids = self._faiss_index.search(np.ascontiguousarray(feats.cpu().numpy(), dtype=np.float32), k)
        return torch.from_numpy(ids).long(), torch.from_numpy(d2).clamp_min(0.0)

    def settings(self) -> str:
        tag = f"soft_tau{format_number(self.tau)}"
        return tag + (f"_topk{self.top_k}" if self.top_k else "")


class ContinuousHead(Head):
    """The features pass through (the continuous-input baseline)."""

    name = "continuous"
    needs_codebook = False

    def __init__(self, codebook: Optional[Codebook] = None):
        self.codebook = codebook

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        if self.codebook is not None:
            self.codebook.check_features(feats)
        return TokenInput("feats", feats=feats.float())


HEADS: Dict[str, Callable[..., Head]] = {"hard": HardHead, "soft": SoftHead, "continuous": ContinuousHead}


def build_head(name: str, codebook: Optional[Codebook] = None, **conf: Any) -> Head:
    """Build a head from the registry (``--head NAME --head-conf '{tau: 8}'``)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {sorted(HEADS)}")
    cls = HEADS[name]
    if cls.needs_codebook and codebook is None:
        raise ValueError(f"head {name!r} needs a k-means codebook (--kmeans)")
    if codebook is not None and codebook.meta.get("per_channel"):
        raise ValueError(f"{codebook.meta.get('path', 'codebook')}: one 1-D codebook per channel (dMel); "
                         "it needs the multi-stream head (softtok.tokenizers.streams)")
    conf = {k: v for k, v in conf.items() if v is not None}
    if name == "soft" and "tau" not in conf:
        raise ValueError("head 'soft' needs --tau")
    try:
        return cls(codebook, **conf)
    except TypeError as exc:
        raise ValueError(f"head {name!r}: bad options {sorted(conf)}: {exc}") from None
