"""TokenEmbedding: the one place where a model meets a TokenInput.

Hard ids look up rows of E (K × d); dense soft probabilities give p @ E; top-k gives
Σ_j w_j · E[id_j]; continuous features go through a linear layer. The same table E
serves training on hard ids and inference on soft inputs, so no retraining is needed.
:class:`StreamEmbedding` owns one such table per stream (SSL layers, dMel channels) and sums them.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from softtok.tokenizers.heads import TokenInput
from softtok.tokenizers.streams import StreamTokenInput


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


class StreamEmbedding(nn.Module):
    """One :class:`TokenEmbedding` per stream, summed: Σ_s E_s(x_s) for a :class:`StreamTokenInput`.

    Summing per-stream tables equals the dMel paper's per-channel embeddings concatenated and then
    projected linearly (the projection folds into each table); for continuous inputs, summing per-stream
    linear layers is one linear layer over the concatenated features.
    """

    def __init__(self, n_tokens: Optional[Sequence[int]], dim: int, feat_dim: Optional[Sequence[int]] = None):
        super().__init__()
        if (n_tokens is None) == (feat_dim is None):
            raise ValueError("StreamEmbedding needs exactly one of n_tokens (discrete) or feat_dim (continuous)")
        sizes = list(n_tokens if n_tokens is not None else feat_dim)
        self.n_tokens = list(n_tokens) if n_tokens is not None else None
        self.feat_dim = list(feat_dim) if feat_dim is not None else None
        self.dim = dim
        self.streams = nn.ModuleList(TokenEmbedding(k, dim) if n_tokens is not None else TokenEmbedding(None, dim, k)
                                     for k in sizes)

    @property
    def kind(self) -> str:
        return self.streams[0].kind

    @torch.no_grad()
    def init_from_centroids(self, centroids: Sequence[np.ndarray | torch.Tensor]) -> None:
        """Each table from its codebook's PCA, turned by a fixed random rotation and scaled by 1/√S.

        Without the rotation every stream's first principal component would land on the same axis of the
        sum (all 80 dMel channels on axis 0); with it the streams start in different directions and the
        summed embedding keeps a unit mean square entry.
        """
        if len(centroids) != len(self.streams):
            raise ValueError(f"{len(centroids)} codebooks for {len(self.streams)} embedding streams")
        scale = len(self.streams) ** -0.5
        for s, (emb, c) in enumerate(zip(self.streams, centroids)):
            emb.init_from_centroids(c)
            gen = torch.Generator().manual_seed(s)
            rotation, _ = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=gen, dtype=torch.float64))
            table = emb.table.weight.double() @ rotation.T * scale
            emb.table.weight.copy_(table.to(emb.table.weight.dtype))

    def forward(self, tokens: StreamTokenInput) -> torch.Tensor:
        if not isinstance(tokens, StreamTokenInput):
            raise ValueError(f"a {len(self.streams)}-stream embedding needs a StreamTokenInput, "
                             f"got {type(tokens).__name__}")
        if len(tokens.parts) != len(self.streams):
            raise ValueError(f"{len(tokens.parts)} token streams for a model of {len(self.streams)} streams")
        if tokens.kind == "feats" or self.kind == "continuous":
            out = self.streams[0](tokens.parts[0])
            for emb, part in zip(self.streams[1:], tokens.parts[1:]):
                out = out + emb(part)
            return out
        return self._stacked(tokens)

    def _stacked(self, tokens: StreamTokenInput) -> torch.Tensor:
        """Σ_s E_s(x_s) in one op over the stacked tables (ΣK, d): 80 dMel streams cost one lookup, not 80."""
        weight = torch.cat([e.table.weight for e in self.streams])
        parts, sizes = tokens.parts, self.n_tokens
        offsets = [sum(sizes[:s]) for s in range(len(sizes))]
        if tokens.kind == "probs":
            for s, (p, k) in enumerate(zip(parts, sizes)):
                if p.probs.shape[-1] != k:
                    raise ValueError(f"stream {s + 1}: soft probabilities over {p.probs.shape[-1]} tokens, "
                                     f"model has K={k}")
            return torch.cat([p.probs for p in parts], dim=-1).to(weight.dtype) @ weight
        for s, (p, k) in enumerate(zip(parts, sizes)):
            if p.ids.numel() and (int(p.ids.max()) >= k or int(p.ids.min()) < 0):
                raise ValueError(f"stream {s + 1}: token ids outside [0, K={k})")
        if tokens.kind == "ids":
            ids = torch.stack([p.ids + off for p, off in zip(parts, offsets)], dim=-1)
            weights = None
        else:  # topk
            ids = torch.cat([p.ids + off for p, off in zip(parts, offsets)], dim=-1)
            weights = torch.cat([p.weights for p in parts], dim=-1).to(weight.dtype)
        flat = ids.reshape(-1, ids.shape[-1])
        out = nn.functional.embedding_bag(flat, weight, mode="sum",
                                          per_sample_weights=None if weights is None else weights.reshape(flat.shape))
        return out.reshape(*ids.shape[:-1], self.dim)


def build_token_embedding(n_tokens: Union[int, Sequence[int], None], dim: int,
                          feat_dim: Union[int, Sequence[int], None] = None) -> nn.Module:
    """A :class:`TokenEmbedding` for int sizes, a :class:`StreamEmbedding` for lists (one size per stream)."""
    if isinstance(n_tokens, (list, tuple)) or isinstance(feat_dim, (list, tuple)):
        return StreamEmbedding(n_tokens, dim, feat_dim)
    return TokenEmbedding(n_tokens, dim, feat_dim)


def pad_token_inputs(items: List[TokenInput] | List[StreamTokenInput], pad_id: int = 0
                     ) -> Tuple[TokenInput | StreamTokenInput, torch.Tensor]:
    """Batch per-utterance TokenInputs of one kind into padded (B, T, …) tensors plus lengths (B,).

    StreamTokenInputs are padded stream by stream into one batched StreamTokenInput.
    """
    if items and isinstance(items[0], StreamTokenInput):
        n = {len(t.parts) for t in items}
        if len(n) != 1:
            raise ValueError(f"cannot batch inputs with different stream counts {sorted(n)}")
        parts = [pad_token_inputs([t.parts[s] for t in items], pad_id) for s in range(n.pop())]
        return StreamTokenInput([p for p, _ in parts]), parts[0][1]
    kinds = {t.kind for t in items}
    if len(kinds) != 1:
        raise ValueError(f"cannot batch mixed TokenInput kinds {sorted(kinds)}")
    kind = kinds.pop()
    lengths = torch.tensor([len(t) for t in items], dtype=torch.long)

    def pad(tensors: List[torch.Tensor], value: float = 0) -> torch.Tensor:
        return nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)

    if kind == "ids":
        return TokenInput("ids", ids=pad([t.ids for t in items], pad_id)), lengths
    # soft padding is the one-hot of pad_id, so padded frames embed as E[pad_id] as they do for hard ids (not as 0):
    # the encoder's convolutions see padded frames, and a model trained on hard tokens saw E[pad_id] there
    padded = torch.arange(max(lengths.tolist(), default=0))[None, :] >= lengths[:, None]  # (B, T)
    if kind == "probs":
        probs = pad([t.probs for t in items])
        probs[..., pad_id][padded] = 1.0
        return TokenInput("probs", probs=probs), lengths
    if kind == "topk":
        weights = pad([t.weights for t in items])
        weights[..., 0][padded] = 1.0  # with ids padded to pad_id
        return TokenInput("topk", ids=pad([t.ids for t in items], pad_id), weights=weights), lengths
    return TokenInput("feats", feats=pad([t.feats for t in items])), lengths
