"""Multi-stream tokens: one codebook per stream, each reading its own columns of the feature vector.

A *source* is one feats.scp with one codebook file; sources are stacked column-wise frame by frame.
A source's codebook is one stream (a k-means codebook, e.g. one SSL layer of ``--layer 9,15,21,22``)
or, when its metadata says ``per_channel: true`` (dMel), one 1-D codebook per feature channel.
:class:`MultiStreamHead` runs one :class:`Head` per stream on its columns (per-source τ) and returns a
:class:`StreamTokenInput`, which ``StreamEmbedding`` embeds as Σ_s E_s(x_s). τ → 0 gives every stream's hard ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from softtok.tokenizers.heads import Head, TokenInput, build_head, format_number
from softtok.tokenizers.kmeans import Codebook, median_nearest_sqdist

logger = logging.getLogger(__name__)
SEP = ","  # separates the sources of --feats / --kmeans / --dump: "a/feats.scp,b/feats.scp"


def split_list(spec: str | Sequence[str] | None) -> List[str]:
    """``"a,b"`` or ``["a", "b"]`` → ``["a", "b"]`` (None → [])."""
    if spec is None:
        return []
    items = spec.split(SEP) if isinstance(spec, str) else [str(s) for s in spec]
    items = [s.strip() for s in items]
    if any(not s for s in items):
        raise ValueError(f"empty item in the list {spec!r} (items are separated by {SEP!r})")
    return items


@dataclass
class StreamTokenInput:
    """One :class:`TokenInput` per stream, all of one kind and length (what ``StreamEmbedding`` consumes)."""

    parts: List[TokenInput]

    def __post_init__(self) -> None:
        kinds = {p.kind for p in self.parts}
        if len(kinds) != 1:
            raise ValueError(f"stream inputs must share one kind, got {sorted(kinds)}")

    @property
    def kind(self) -> str:
        return self.parts[0].kind

    def __len__(self) -> int:
        return len(self.parts[0])

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts)


def is_per_channel(codebook: Optional[Codebook]) -> bool:
    """True for a codebook file holding one 1-D codebook per feature channel (its columns), as dMel's."""
    return codebook is not None and bool(codebook.meta.get("per_channel"))


def expand_codebook(codebook: Codebook) -> List[Codebook]:
    """The stream codebooks of one codebook file: itself, or one (K, 1) codebook per column if per-channel."""
    if not is_per_channel(codebook):
        return [codebook]
    meta = {k: v for k, v in codebook.meta.items() if k not in ("per_channel", "feature_spec")}
    return [Codebook(np.ascontiguousarray(codebook.centroids[:, c:c + 1]), {**meta, "channel": c})
            for c in range(codebook.dim)]


def is_multi_stream(codebooks: Optional[Sequence[Codebook]], n_sources: int) -> bool:
    """Whether inputs need the multi-stream path (several sources, or a per-channel codebook)."""
    return n_sources > 1 or any(is_per_channel(c) for c in codebooks or [])


def per_source(value: Any, n_sources: int, name: str) -> List[Any]:
    """A scalar for every source, or a list with one value per source (a wrong length is an error)."""
    if not isinstance(value, (list, tuple)):
        return [value] * n_sources
    if len(value) != n_sources:
        raise ValueError(f"{name}: {len(value)} values for {n_sources} feature streams")
    return list(value)


def tau_tag(tau: float | Sequence[float]) -> str:
    """``tau`` as decode folder names write it: ``2.9``, or per source ``2.9-3.1-4``."""
    taus = tau if isinstance(tau, (list, tuple)) else [tau]
    return "-".join(format_number(float(t)) for t in taus)


class ChannelHead:
    """Hard or dense soft tokens of every channel of a per-channel codebook in one op: (T, C) → C TokenInputs.

    The same ids and probabilities as one head per channel (d² computed directly as (x − v)²), without C calls.
    """

    def __init__(self, codebook: Codebook, name: str, tau: Optional[float] = None):
        self.codebook, self.name, self.tau = codebook, name, tau
        self.needs_codebook = True

    def __call__(self, x: torch.Tensor) -> List[TokenInput]:
        d2 = channel_sqdist(self.codebook, x)
        if self.name == "hard":
            return [TokenInput("ids", ids=ids) for ids in d2.argmin(dim=2).unbind(1)]
        probs = torch.softmax(-(d2 - d2.min(dim=2, keepdim=True).values) / self.tau, dim=2)
        return [TokenInput("probs", probs=p) for p in probs.unbind(1)]


class MultiStreamHead(Head):
    """One head per source over consecutive feature columns: (T, Σ D_i) → :class:`StreamTokenInput`.

    A source head gives one TokenInput (a plain codebook) or one per channel (:class:`ChannelHead`).
    """

    def __init__(self, heads: List[Any], dims: List[int], codebooks: List[Optional[Codebook]],
                 tau: Optional[List[float]] = None, top_k: Optional[int] = None):
        self.heads, self.dims, self.codebooks = heads, dims, codebooks
        self.name, self.needs_codebook = heads[0].name, heads[0].needs_codebook
        self.tau, self.top_k = tau, top_k

    def __call__(self, feats: torch.Tensor) -> StreamTokenInput:
        if feats.ndim != 2 or feats.shape[1] != sum(self.dims):
            raise ValueError(f"{len(self.dims)}-source head: features of shape {tuple(feats.shape)}, "
                             f"expected (T, {sum(self.dims)})")
        parts: List[TokenInput] = []
        for head, x in zip(self.heads, torch.split(feats, self.dims, dim=1)):
            out = head(x)
            parts += out if isinstance(out, list) else [out]
        return StreamTokenInput(parts)

    def settings(self) -> str:
        if self.name != "soft":
            return self.name
        tag = "soft_tau" + tau_tag(self.tau)  # one τ per source: a dMel source's channels share theirs
        return tag + (f"_topk{self.top_k}" if self.top_k else "")


def build_stream_head(name: str, codebooks: Optional[Sequence[Codebook]], source_dims: Sequence[int],
                      tau: Any = None, top_k: Optional[int] = None, **conf: Any) -> MultiStreamHead:
    """A head per stream; ``tau`` is one value or a list with one τ per source (a dMel source's channels share it)."""
    n = len(source_dims)
    if codebooks is None and name != "continuous":
        raise ValueError(f"head {name!r} needs a k-means codebook (--kmeans)")
    if codebooks is not None and len(codebooks) != n:
        raise ValueError(f"{len(codebooks)} codebooks (--kmeans) for {n} feature streams (--feats)")
    taus = per_source(tau, n, "tau")
    heads: List[Any] = []
    stream_codebooks: List[Optional[Codebook]] = []
    for i, dim in enumerate(source_dims):
        cb = codebooks[i] if codebooks is not None and name != "continuous" else None
        if cb is not None and cb.dim != dim:
            raise ValueError(f"stream {i + 1}: codebook {cb.meta.get('path', '')} has dim {cb.dim}, features {dim}")
        parts = expand_codebook(cb) if cb is not None else [None]
        stream_heads = [build_head(name, part, **{"tau": taus[i], "top_k": top_k, **conf}) for part in parts]
        vectorised = is_per_channel(cb) and not top_k and not conf
        heads.append(ChannelHead(cb, name, taus[i]) if vectorised else _SourceHeads(stream_heads, len(parts)))
        stream_codebooks += parts
    return MultiStreamHead(heads, list(source_dims), stream_codebooks,
                           [float(t) for t in taus] if name == "soft" else None, top_k)


class _SourceHeads:
    """The heads of one source's streams, each on its own columns (one column each for a per-channel codebook)."""

    def __init__(self, heads: List[Head], n: int):
        self.heads, self.name, self.needs_codebook = heads, heads[0].name, heads[0].needs_codebook
        self.n = n

    def __call__(self, x: torch.Tensor) -> List[TokenInput]:
        if self.n == 1:
            return [self.heads[0](x)]
        return [h(c) for h, c in zip(self.heads, x.split(1, dim=1))]


def build_input_head(name: str, codebooks: Optional[Sequence[Codebook]], source_dims: Sequence[int],
                     **conf: Any) -> Head:
    """The single-stream head of ``build_head`` for one plain source, else a :class:`MultiStreamHead`."""
    if not is_multi_stream(codebooks, len(source_dims)):
        return build_head(name, codebooks[0] if codebooks else None, **conf)
    return build_stream_head(name, codebooks, source_dims, **conf)


def embedding_sizes(head: Head, source_dims: Sequence[int]):
    """(n_tokens, feat_dim) of the model input a head feeds: ints for one stream, lists (one per stream) for many."""
    if isinstance(head, MultiStreamHead):
        if head.name == "continuous":
            return None, list(source_dims)
        return [cb.n_clusters for cb in head.codebooks], None
    if head.name == "continuous":
        return None, int(source_dims[0])
    return head.codebook.n_clusters, None


def head_codebooks(head: Head) -> Optional[Codebook | List[Codebook]]:
    """What a model's token table is initialised from: the head's codebook, one per stream, or None (continuous)."""
    if isinstance(head, MultiStreamHead):
        return None if head.name == "continuous" else list(head.codebooks)
    return getattr(head, "codebook", None)


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


def channel_sqdist(codebook: Codebook, x: torch.Tensor) -> torch.Tensor:
    """(T, C, K) squared distances of each frame's channel c to the K 1-D centres of a per-channel codebook."""
    codebook.check_features(x)
    centres = torch.from_numpy(codebook.centroids).to(x.device)  # (K, C)
    return (x.float()[:, :, None] - centres.T[None]) ** 2


def nearest_sqdist(codebook: Codebook, x: torch.Tensor) -> torch.Tensor:
    """Squared distance of each frame (T,), or each frame and channel (T·C,) if per-channel, to its nearest centre."""
    if not is_per_channel(codebook):
        return codebook.distances(x).min(dim=1).values
    return channel_sqdist(codebook, x).min(dim=2).values.reshape(-1)


def median_nearest_sqdist_any(codebook: Codebook, feats_scp: str, max_frames: int = 200_000) -> float:
    """:func:`median_nearest_sqdist`, over channels too for a per-channel codebook: the scale τ is expressed in."""
    return median_nearest_sqdist(codebook, feats_scp, max_frames, nearest=lambda x: nearest_sqdist(codebook, x))


def tau_scales(codebooks: Sequence[Codebook], feats: Sequence[str]) -> List[float]:
    """The median nearest squared distance of each source: τ = factor × scale gives one τ per source."""
    if len(codebooks) != len(feats):
        raise ValueError(f"{len(codebooks)} codebooks for {len(feats)} feature streams")
    return [median_nearest_sqdist_any(cb, f) for cb, f in zip(codebooks, feats)]
