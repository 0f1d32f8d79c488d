"""TokenEmbedding: the one place where a model meets a TokenInput.

Hard ids look up rows of E (K × d); dense soft probabilities give p @ E; top-k gives
Σ_j w_j · E[id_j]; continuous features go through a linear layer. The same table E
serves training on hard ids and inference on soft inputs, so no retraining is needed.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from softtok.tokenizers.heads import TokenInput


class TokenEmbedding(nn.Module):
    """Embed hard ids (…), soft probs (…, K), top-k (ids, weights) (…, k) or features (…, D) to (…, d)."""

    def __init__(self, n_tokens: Optional[int], dim: int, feat_dim: Optional[int] = None):
        super().__init__()
        if (n_tokens is None) == (feat_dim is None):
            raise ValueError("TokenEmbedding needs exactly one of n_tokens (discrete) or feat_dim (continuous)")
        self.n_tokens, self.dim, self.feat_dim = n_tokens, dim, feat_dim
        self.table = nn.Embedding(n_tokens, dim) if n_tokens is not None else None
        self.linear = nn.Linear(feat_dim, dim) if feat_dim is not None else None

    @torch.no_grad()
    def init_from_centroids(self, centroids: np.ndarray | torch.Tensor) -> None:
        """Start E as the centroids' top principal components (PCA to d dims, unit mean square entry).

        A random table gives a hard-token model no notion of which tokens sound alike; this one
        starts E_k where the k-means geometry puts token k, so training leaves the CTC plateau sooner
        (issue 3: K=1024 never left it in 8 CPU epochs from a random table). E stays trainable.
        """
        if self.table is None:
            raise ValueError("init_from_centroids needs a discrete TokenEmbedding")
        c = torch.as_tensor(np.asarray(centroids), dtype=torch.float64)
        if c.shape[0] != self.n_tokens:
            raise ValueError(f"{c.shape[0]} centroids for a table of K={self.n_tokens}")
        c = c - c.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(c, full_matrices=False)
        n = min(self.dim, v.shape[0])
        proj = c @ v[:n].T  # (K, n), components in decreasing variance
        table = torch.zeros(self.n_tokens, self.dim, dtype=torch.float64)
        table[:, :n] = proj / proj.pow(2).mean().sqrt().clamp_min(1e-12) * (self.dim / n) ** 0.5
        self.table.weight.copy_(table.to(self.table.weight.dtype))

    @property
    def kind(self) -> str:
        """``discrete`` (accepts ids, probs, topk) or ``continuous`` (accepts feats)."""
        return "discrete" if self.table is not None else "continuous"

    def forward(self, tokens: TokenInput) -> torch.Tensor:
        if tokens.kind == "feats":
            self._expect("continuous", tokens.kind)
            return self.linear(tokens.feats)
        self._expect("discrete", tokens.kind)
        weight = self.table.weight
        if tokens.kind == "ids":
            return self.table(tokens.ids)
        if tokens.kind == "probs":
            if tokens.probs.shape[-1] != self.n_tokens:
                raise ValueError(f"soft probabilities over {tokens.probs.shape[-1]} tokens, model has K={self.n_tokens}")
            return tokens.probs.to(weight.dtype) @ weight
        if tokens.kind == "topk":
            if int(tokens.ids.max()) >= self.n_tokens or int(tokens.ids.min()) < 0:
                raise ValueError(f"top-k ids outside [0, K={self.n_tokens})")
            return (tokens.weights.to(weight.dtype).unsqueeze(-1) * self.table(tokens.ids)).sum(-2)
        raise ValueError(f"unknown TokenInput kind {tokens.kind!r}")

    def _expect(self, kind: str, got: str) -> None:
        if self.kind != kind:
            raise ValueError(f"a {self.kind} TokenEmbedding cannot take {got!r} inputs")


def pad_token_inputs(items: List[TokenInput], pad_id: int = 0) -> Tuple[TokenInput, torch.Tensor]:
    """Batch per-utterance TokenInputs of one kind into padded (B, T, …) tensors plus lengths (B,)."""
    kinds = {t.kind for t in items}
    if len(kinds) != 1:
        raise ValueError(f"cannot batch mixed TokenInput kinds {sorted(kinds)}")
    kind = kinds.pop()
    lengths = torch.tensor([len(t) for t in items], dtype=torch.long)

    def pad(tensors: List[torch.Tensor], value: float = 0) -> torch.Tensor:
        return nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)

    if kind == "ids":
        return TokenInput("ids", ids=pad([t.ids for t in items], pad_id)), lengths
    if kind == "probs":
        return TokenInput("probs", probs=pad([t.probs for t in items])), lengths
    if kind == "topk":
        return TokenInput("topk", ids=pad([t.ids for t in items], pad_id),
                          weights=pad([t.weights for t in items])), lengths
    return TokenInput("feats", feats=pad([t.feats for t in items])), lengths
