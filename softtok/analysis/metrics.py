"""Streaming metrics of frame representations against frame-level phone labels.

- Separability: tr(S_b) / tr(S_w), the between- over the within-class scatter trace (the class
  means' spread over the spread around them). Invariant to translation and isotropic scaling, so it
  compares spaces of different dims and scales; not invariant to anisotropic linear maps.
- Purity and PNMI of tokens (HuBERT, Hsu et al. 2021, sec. IV-B): from the joint p(phone, token),
  phone purity E_z[max_y p(y|z)], cluster purity E_y[max_z p(z|y)], PNMI = I(y; z) / H(y).
  Soft assignments give a soft joint: each frame adds p(z|x) to its phone's row.
- RankMe (Garrido et al. 2023): exp of the entropy of the L1-normalised singular values of the
  (frames × dim) matrix, an effective rank; computed from the streamed Gram matrix XᵀX.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

RANKME_EPS = 1e-7  # the paper's ε added to the normalised singular values


def _as_float64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to(torch.float64).cpu()


class ScatterStats:
    """Per-class counts and sums of frames (T, D) streamed in, for the scatter traces.

    Sums are taken around a shift (the first batch's mean) to keep the float64 cancellation
    in Σ‖x‖² − Σ_c ‖s_c‖²/n_c small.
    """

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.counts = torch.zeros(n_classes, dtype=torch.float64)
        self.sums: Optional[torch.Tensor] = None
        self.sqnorm = 0.0
        self.shift: Optional[torch.Tensor] = None

    def update(self, x: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add frames ``x`` (T, D) with class indices ``labels`` (T,) in [0, n_classes)."""
        x, labels = _as_float64(x), torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if x.ndim != 2 or labels.shape != (x.shape[0],):
            raise ValueError(f"expected frames (T, D) and labels (T,), got {tuple(x.shape)} and {tuple(labels.shape)}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise ValueError(f"labels outside [0, {self.n_classes})")
        if self.shift is None:
            if not len(x):
                return
            self.shift = x.mean(0)
            self.sums = torch.zeros(self.n_classes, x.shape[1], dtype=torch.float64)
        x = x - self.shift
        self.counts += torch.bincount(labels, minlength=self.n_classes).double()
        self.sums.index_add_(0, labels, x)
        self.sqnorm += float((x * x).sum())

    def result(self) -> Dict[str, float]:
        """Traces of the between-, within- and total scatter (per frame) and their ratio between/within."""
        n = float(self.counts.sum())
        if self.sums is None or n == 0:
            raise ValueError("separability: no frames were added")
        seen = self.counts > 0
        class_term = float(((self.sums[seen] ** 2).sum(1) / self.counts[seen]).sum())
        total = self.sqnorm - float((self.sums.sum(0) ** 2).sum()) / n
        within = max(self.sqnorm - class_term, 0.0)
        between = max(total - within, 0.0)
        ratio = between / within if within > 0 else float("inf")
        return {"between": between / n, "within": within / n, "total": total / n, "ratio": ratio,
                "frames": int(n), "classes": int(seen.sum())}


def separability(x: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, n_classes: int) -> Dict[str, float]:
    """tr(S_b)/tr(S_w) and the traces of one frame matrix (T, D) with labels (T,)."""
    stats = ScatterStats(n_classes)
    stats.update(x, labels)
    return stats.result()


class Contingency:
    """Joint counts of (label, token) over frames: hard ids add 1, soft probabilities add p(z|x)."""

    def __init__(self, n_labels: int, n_tokens: int):
        self.counts = torch.zeros(n_labels, n_tokens, dtype=torch.float64)

    def update(self, labels: torch.Tensor | np.ndarray, ids: Optional[torch.Tensor] = None,
               probs: Optional[torch.Tensor] = None) -> None:
        """Add frames with label indices (T,) and either token ids (T,) or probabilities (T, K)."""
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        n_labels, n_tokens = self.counts.shape
        if (ids is None) == (probs is None):
            raise ValueError("contingency: give exactly one of ids or probs")
        if ids is not None:
            flat = labels * n_tokens + torch.as_tensor(ids, dtype=torch.long).cpu()
            self.counts += torch.bincount(flat, minlength=n_labels * n_tokens).double().view(n_labels, n_tokens)
        else:
            self.counts.index_add_(0, labels, _as_float64(probs))


def purity_pnmi(joint: torch.Tensor | np.ndarray) -> Dict[str, float]:
    """Phone purity, cluster purity, PNMI = I(y; z)/H(y) (and H(y), I in nats) of a (labels × tokens) count table."""
    p = _as_float64(joint)
    total = float(p.sum())
    if p.ndim != 2 or total <= 0:
        raise ValueError(f"purity: expected a non-empty (labels, tokens) count table, got shape {tuple(p.shape)}")
    p = p / total
    py, pz = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * torch.log(p[nz] / (py[:, None] * pz[None, :])[nz])).sum())
    hy = float(-(py[py > 0] * torch.log(py[py > 0])).sum())
    return {"phone_purity": float(p.max(0).values.sum()), "cluster_purity": float(p.max(1).values.sum()),
            "pnmi": mi / hy if hy > 0 else 0.0, "mutual_info": mi, "phone_entropy": hy,
            "tokens_used": int((pz > 0).sum())}


class GramStats:
    """XᵀX of frames streamed in: RankMe without holding the (frames × dim) matrix."""

    def __init__(self):
        self.gram: Optional[torch.Tensor] = None
        self.frames = 0

    def update(self, x: torch.Tensor | np.ndarray) -> None:
        x = _as_float64(x)
        self.gram = x.T @ x if self.gram is None else self.gram + x.T @ x
        self.frames += int(x.shape[0])

    def singular_values(self) -> torch.Tensor:
        if self.gram is None:
            raise ValueError("rankme: no frames were added")
        return torch.linalg.eigvalsh(self.gram).clamp_min(0.0).sqrt().flip(0)

    def rankme(self) -> float:
        return rankme_from_singular_values(self.singular_values())


def rankme_from_singular_values(s: torch.Tensor | np.ndarray, eps: float = RANKME_EPS) -> float:
    """exp(−Σ p_k log p_k), p_k = σ_k / ‖σ‖₁ + ε (Garrido et al. 2023, eq. 1)."""
    s = _as_float64(s)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def rankme(x: torch.Tensor | np.ndarray) -> float:
    """RankMe of a (frames × dim) matrix, from its singular values (no centring, as in the paper)."""
    return rankme_from_singular_values(torch.linalg.svdvals(_as_float64(x)))
