"""TokenEmbedding: the one place where a model meets a TokenInput.

A discrete model holds one table E_s (K_s × d) per token stream and embeds a frame as Σ_s E_s(x_s): hard ids
look up rows, dense soft probabilities give p_s @ E_s, top-k gives Σ_j w_j · E_s[id_j]. The same tables serve
training on hard ids and inference on soft inputs, so no retraining is needed. A continuous model holds one
linear layer per feature source and sums them (one linear layer over the concatenated features). One stream is
the common case; several SSL layers or dMel channels give more (summing per-channel tables is the dMel paper's
per-channel embeddings concatenated and projected, the projection folded in).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from softtok.downstream.fused import Centroids, fused_soft_embedding
from softtok.tokenizers.heads import TokenInput
from softtok.tokenizers.tau import as_list

Sizes = Union[int, Sequence[int], None]


class TokenEmbedding(nn.Module):
    """Embed hard ids (…, S), soft probs (…, S, K), top-k (…, S, k) or features (…, D) to (…, d).

    ``n_tokens``: K of each stream (an int for one stream); ``feat_dim``: dim of each feature source (continuous).
    """

    def __init__(self, n_tokens: Sizes, dim: int, feat_dim: Sizes = None):
        super().__init__()
        if (n_tokens is None) == (feat_dim is None):
            raise ValueError("TokenEmbedding needs exactly one of n_tokens (discrete) or feat_dim (continuous)")
        self.sizes, self.feat_dims, self.dim = as_list(n_tokens), as_list(feat_dim), dim
        self.tables = nn.ModuleList(nn.Embedding(k, dim) for k in self.sizes or [])
        self.linears = nn.ModuleList(nn.Linear(d, dim) for d in self.feat_dims or [])

    @property
    def kind(self) -> str:
        """``discrete`` (accepts ids, probs, topk) or ``continuous`` (accepts feats)."""
        return "discrete" if self.sizes is not None else "continuous"

    @property
    def n_streams(self) -> int:
        return len(self.tables) or len(self.linears)

    @torch.no_grad()
    def init_from_centroids(self, centroids: Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor) -> None:
        """Start each E_s as its codebook's top principal components (PCA to d dims, unit mean square entry).

        A random table gives a hard-token model no notion of which tokens sound alike; this one starts E_k
        where the k-means geometry puts token k, so training leaves the CTC plateau sooner. With several
        streams each table is turned by a fixed random rotation and scaled by 1/√S, so the streams' first
        components do not all land on the same axis of the sum. The tables stay trainable.
        """
        if self.kind != "discrete":
            raise ValueError("init_from_centroids needs a discrete TokenEmbedding")
        if isinstance(centroids, (np.ndarray, torch.Tensor)):
            centroids = [centroids]
        if len(centroids) != self.n_streams:
            raise ValueError(f"{len(centroids)} codebooks for {self.n_streams} embedding streams")
        for s, (table, c) in enumerate(zip(self.tables, centroids)):
            pca = pca_table(c, table.num_embeddings, self.dim)
            if self.n_streams > 1:
                gen = torch.Generator().manual_seed(s)
                rotation, _ = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=gen, dtype=torch.float64))
                pca = pca.to(table.weight.dtype).double() @ rotation.T * self.n_streams ** -0.5
            table.weight.copy_(pca.to(table.weight.dtype))

    def forward(self, tokens: TokenInput) -> torch.Tensor:
        self._check(tokens)
        if tokens.kind == "feats":
            return self._linear(tokens.feats)
        if len(self.tables) == 1:
            return self._one_stream(tokens)
        return self._stacked(tokens)

    def soft_from_features(self, feats: torch.Tensor, centroids: Centroids, tau: float,
                           lengths: Optional[torch.Tensor] = None, pad_id: int = 0) -> torch.Tensor:
        """Dense soft embedding of features (…, T, D) straight from one stream's codebook: (…, T, d).

        Equal to the soft head (``tau``) then ``forward`` on its probabilities, in one fused attention call
        that never builds the (T, K) matrix (:func:`~softtok.downstream.fused.fused_soft_embedding`). With
        ``lengths`` (B,) of padded feats (B, T, D), frames past a length embed as E[pad_id], as padded soft input
        does (:func:`~softtok.downstream.data.pad_token_inputs`).
        """
        if self.kind != "discrete" or self.n_streams != 1:
            raise ValueError(f"soft_from_features needs a discrete TokenEmbedding of one stream, this one is "
                             f"{self.kind} with {self.n_streams} streams")
        table = self.tables[0].weight
        out = fused_soft_embedding(feats, centroids, tau, table)
        if lengths is not None:
            padded = torch.arange(out.shape[-2], device=out.device)[None, :] >= lengths.to(out.device)[:, None]
            out[padded] = table[pad_id]
        return out

    def _check(self, tokens: TokenInput) -> None:
        """One-line errors for input this model cannot take: kind, stream count, K, ids, feature dim."""
        if tokens.kind == "feats" and self.kind == "discrete":
            raise ValueError(f"model was trained on tokens (K={_text(self.sizes)}); it cannot take continuous features")
        if tokens.kind != "feats" and self.kind == "continuous":
            raise ValueError(f"model was trained on continuous features (dim {_text(self.feat_dims)}); "
                             f"it cannot take {tokens.kind!r} token input")
        if tokens.kind == "feats":
            if tokens.feats.shape[-1] != sum(self.feat_dims):
                raise ValueError(f"features of dim {tokens.feats.shape[-1]}, model takes dim {sum(self.feat_dims)}")
            return
        if tokens.n_streams != self.n_streams:
            raise ValueError(f"{tokens.n_streams} token streams for a model of {self.n_streams} streams")
        if tokens.kind == "probs":
            self._check_probs(tokens.probs)
        else:
            self._check_ids(tokens.ids if tokens.kind == "ids" else tokens.ids.movedim(-1, 0))

    def _check_probs(self, probs: torch.Tensor) -> None:
        if probs.shape[-1] != max(self.sizes):
            raise ValueError(f"soft probabilities over K={probs.shape[-1]} tokens, model has K={_text(self.sizes)}")

    def _check_ids(self, ids: torch.Tensor) -> None:
        """``ids`` (…, S): each stream's ids in [0, K_s)."""
        if not ids.numel():
            return
        sizes = torch.tensor(self.sizes, device=ids.device)
        flat = ids.reshape(-1, len(self.sizes))
        bad = ((flat < 0) | (flat >= sizes)).any(dim=0)
        if bool(bad.any()):
            s = int(bad.nonzero()[0])
            where = f"stream {s + 1}: " if len(self.sizes) > 1 else ""
            raise ValueError(f"{where}token ids outside [0, K={self.sizes[s]})")

    def _one_stream(self, tokens: TokenInput) -> torch.Tensor:
        """One table: a lookup, p @ E, or Σ_j w_j E[id_j]."""
        table = self.tables[0]
        if tokens.kind == "ids":
            return table(tokens.ids.squeeze(-1))
        if tokens.kind == "probs":
            return tokens.probs.squeeze(-2).to(table.weight.dtype) @ table.weight
        weights = tokens.weights.squeeze(-2).to(table.weight.dtype)
        return (weights.unsqueeze(-1) * table(tokens.ids.squeeze(-2))).sum(-2)

    def _stacked(self, tokens: TokenInput) -> torch.Tensor:
        """Σ_s E_s(x_s) in one op over the stacked tables (ΣK, d): 80 dMel streams cost one lookup, not 80."""
        weight = torch.cat([t.weight for t in self.tables])
        if tokens.kind == "probs":
            probs = tokens.probs
            if len(set(self.sizes)) == 1:
                flat = probs.reshape(*probs.shape[:-2], -1)
            else:
                flat = torch.cat([probs[..., s, :k] for s, k in enumerate(self.sizes)], dim=-1)
            return flat.to(weight.dtype) @ weight
        offsets = torch.tensor([sum(self.sizes[:s]) for s in range(len(self.sizes))], device=tokens.ids.device)
        if tokens.kind == "ids":
            ids, weights = tokens.ids + offsets, None
        else:  # topk: (…, S, k) → (…, S·k), stream-major
            ids = (tokens.ids + offsets[:, None]).flatten(-2)
            weights = tokens.weights.flatten(-2).to(weight.dtype)
        flat = ids.reshape(-1, ids.shape[-1])
        out = nn.functional.embedding_bag(flat, weight, mode="sum",
                                          per_sample_weights=None if weights is None else weights.reshape(flat.shape))
        return out.reshape(*ids.shape[:-1], self.dim)

    def _linear(self, feats: torch.Tensor) -> torch.Tensor:
        """Σ_i W_i x_i + b_i over the feature sources' columns."""
        parts = torch.split(feats, self.feat_dims, dim=-1) if len(self.linears) > 1 else (feats,)
        out = self.linears[0](parts[0])
        for linear, x in zip(self.linears[1:], parts[1:]):
            out = out + linear(x)
        return out

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        """Read checkpoints of the earlier layouts too (``table.*`` / ``linear.*``, ``streams.<s>.table.*``)."""
        rename_legacy_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)


def rename_legacy_keys(state_dict: Dict[str, Any], prefix: str) -> None:
    """Map the one-stream (``table``, ``linear``) and multi-stream (``streams.<s>.table``) keys to ``tables.<s>``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        parts = rest.split(".")
        if parts[0] in ("table", "linear"):
            new = f"{parts[0]}s.0." + ".".join(parts[1:])
        elif parts[0] == "streams" and len(parts) > 2 and parts[2] in ("table", "linear"):
            new = f"{parts[2]}s.{parts[1]}." + ".".join(parts[3:])
        else:
            continue
        state_dict[prefix + new] = state_dict.pop(key)


def rename_prefix(state_dict: Dict[str, Any], old: str, new: str) -> None:
    """Rename every key that starts with ``old`` to start with ``new`` (a module renamed since a checkpoint)."""
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[new + key[len(old):]] = state_dict.pop(key)


def pca_table(centroids: np.ndarray | torch.Tensor, n_tokens: int, dim: int) -> torch.Tensor:
    """(K, d) float64 table of the centroids' top principal components, scaled to a unit mean square entry."""
    c = torch.as_tensor(np.asarray(centroids), dtype=torch.float64)
    if c.shape[0] != n_tokens:
        raise ValueError(f"{c.shape[0]} centroids for a table of K={n_tokens}")
    c = c - c.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(c, full_matrices=False)
    n = min(dim, v.shape[0])
    proj = c @ v[:n].T  # (K, n), components in decreasing variance
    table = torch.zeros(n_tokens, dim, dtype=torch.float64)
    table[:, :n] = proj / proj.pow(2).mean().sqrt().clamp_min(1e-12) * (dim / n) ** 0.5
    return table


def _text(sizes: Optional[List[int]]) -> str:
    """K (or dims) of the streams for messages: ``16``, or ``8+8`` for several."""
    return "+".join(map(str, sizes or []))
