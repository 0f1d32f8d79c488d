"""The dense soft embedding of one stream as one attention call, without the (T, K) probability matrix.

Σ_k p_k E_k with p = softmax_k(−‖x − c_k‖²/τ) equals softmax_k((2 x·c_k − ‖c_k‖²)/τ) E (softmax ignores the
per-frame ‖x‖²), which is one attention head: q = features, k = centroids, v = E, scale 2/τ and an additive
bias −‖c‖²/τ. A fused kernel (CPU flash attention; a memory-efficient kernel on CUDA) then works block by block
and never holds the (T, K) matrix. The CPU kernel wants one 4-D layout and equal q, k, v widths, so the frames
are laid out as one sequence and the narrower side is zero-padded (zeros change no dot product). x and c are
taken from the centroids' mean (the same softmax; float32 stays exact under a large common offset).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from softtok.tokenizers.heads import Head
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import is_per_channel
from softtok.tokenizers.tau import check_tau

Centroids = Union[Codebook, np.ndarray, torch.Tensor]

# The largest |logit| the fused path accepts, a margin below float32's overflow (≈3.4e38): the kernel adds the
# scaled dot products and the bias, each up to this bound, and subtracts a running maximum.
MAX_LOGIT = torch.finfo(torch.float32).max / 16


def centred_tensors(centroids: Centroids, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), centroids − mean (K, D)) float32 on ``device`` from a Codebook, an array or a tensor (one
    stream): the logits are computed from the centroids' mean, as :meth:`Codebook.distances` computes d²."""
    if isinstance(centroids, Codebook):
        if is_per_channel(centroids) and centroids.dim > 1:
            raise ValueError(f"fused soft embedding: a per-channel codebook of {centroids.dim} channels is "
                             f"{centroids.dim} streams; it takes one")
        mean, centred, _ = centroids.centred(device)
        return mean, centred
    c = torch.as_tensor(centroids, dtype=torch.float32, device=device)
    mean = c.double().mean(0).float() if c.ndim == 2 else c.new_zeros(c.shape[-1:])
    return mean, c - mean


def logit_bound(feats: torch.Tensor, c_sqnorm: torch.Tensor, tau: float) -> float:
    """An upper bound on |(2 x·c − ‖c‖²)/τ| over all frames and centroids (Cauchy–Schwarz), and on the scale 2/τ."""
    x_norm = float(feats.norm(dim=-1).max()) if feats.numel() else 0.0
    c_max = float(c_sqnorm.max())
    return max(2.0 * x_norm * c_max ** 0.5 + c_max, 2.0) / tau


class LogitOverflow(ValueError):
    """τ so small for these features that the fused call's logits would overflow float32."""


def fuses(head: Head, device: Union[str, torch.device], fused: Optional[bool] = None) -> bool:
    """Whether a decoder embeds ``head``'s input with the fused call: ``fused`` when given, else where it measured
    faster than the two-step path (bench/FUSED_EMBEDDING.md: CPU, K = 32 to 4096, D = 384 and 1024).

    Only a dense soft head with one τ for the batch (not one per utterance) over one stream can fuse; forcing it for
    any other head is a one-line error.
    """
    fusable = (head.name == "soft" and head.top_k is None and not head.tau_per_utterance
               and head.codebooks.n_streams == 1)
    if fused and not fusable:
        raise ValueError(f"the fused soft embedding takes a dense soft head with one τ over one token stream, not "
                         f"{head.settings()} over {head.codebooks.n_streams if head.codebooks else 0} streams")
    return fusable and (fused if fused is not None else torch.device(device).type == "cpu")


def fused_soft_embedding(feats: torch.Tensor, centroids: Centroids, tau: float, table: torch.Tensor) -> torch.Tensor:
    """Σ_k softmax_k(−‖x − c_k‖²/τ) E_k for feats (…, T, D), centroids (K, D), table E (K, d): (…, T, d).

    One stream. A τ so small that the logits would overflow float32 is a one-line error (the two-step path,
    soft head then TokenEmbedding, subtracts each frame's nearest distance first and takes any τ > 0).
    """
    tau = check_tau(tau)
    mean, c = centred_tensors(centroids, feats.device)
    if feats.shape[-1] != c.shape[1]:
        raise ValueError(f"fused soft embedding: features of dim {feats.shape[-1]}, codebook dim {c.shape[1]}")
    if table.shape[0] != c.shape[0]:
        raise ValueError(f"fused soft embedding: {c.shape[0]} centroids for a table of K={table.shape[0]}")
    x, c_sqnorm = feats.float() - mean, c.pow(2).sum(1)
    bound = logit_bound(x, c_sqnorm, tau)
    if bound > MAX_LOGIT:
        raise LogitOverflow(f"fused soft embedding: tau={tau:g} too small, logits up to {bound:.3g} overflow float32 "
                         f"(limit {MAX_LOGIT:.3g}); use the soft head and TokenEmbedding instead")
    dtype = torch.promote_types(table.dtype, torch.float32)
    width = max(c.shape[1], table.shape[1])
    q = _pad_to(x.reshape(1, 1, -1, c.shape[1]).to(dtype), width)
    k = _pad_to(c.to(dtype), width)[None, None]
    v = _pad_to(table.to(dtype), width)[None, None]
    bias = (-c_sqnorm / tau).to(dtype).view(1, 1, 1, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=2.0 / tau)
    return out[..., :table.shape[1]].reshape(*feats.shape[:-1], table.shape[1]).to(table.dtype)


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` with zero columns appended up to ``width`` (itself when already that wide)."""
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))
