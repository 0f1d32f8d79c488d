"""Assignment heads: the one place that knows hard tokens from soft ones.

A head maps stacked features (T, Σ D_i) of its sources to a :class:`TokenInput` over S token streams (one
stream is the common case; several SSL layers or dMel channels give more):
- ``hard``: ids (T, S) of each stream's nearest centre;
- ``soft``: p(k|x) = softmax_k(−‖x − c_k‖² / τ) per stream, dense (T, S, K) or top-k (ids, weights),
  renormalised over the k kept centres; one τ per source, fixed, or ``tau: auto`` (:class:`~softtok.tokenizers.tau.
  AutoTau`): ``tau_factor`` × the median nearest squared distance of the input itself, per ``tau_scope`` ``set``
  (measured by :meth:`SoftHead.fit_set` before use) or ``utterance`` (measured on each call's frames);
- ``continuous``: the features themselves.
Every codebook gives (T, S, K) squared distances (:class:`~softtok.tokenizers.streams.StreamCodebooks`) that
go through the same argmin or softmax, so τ → 0 gives the hard ids exactly. On an exact tie (a frame equally far
from two centres) hard takes the lower index while soft splits the mass equally between them at every τ: the
probabilities' argmax (first maximum) is still the hard id, but the τ → 0 embedding is the tied rows' mean.
"""

from __future__ import annotations

import argparse
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import StreamCodebooks, nearest_sqdist, per_source, split_sources
from softtok.tokenizers.tau import TAU_SCOPES, AutoTau, Tau, check_tau, one_or_list, tau_tag

KINDS = ("ids", "probs", "topk", "feats")
Codebooks = Union[Codebook, Sequence[Codebook], StreamCodebooks, None]


@dataclass
class TokenInput:
    """What a model's token embedding consumes; exactly the fields of ``kind`` are set. S = token streams.

    ids: (…, T, S) int64 for ``ids``; (…, T, S, k) int64 for ``topk``.
    probs: (…, T, S, K) float32 for ``probs`` (a stream with fewer than K centres has zeros beyond its own).
    weights: (…, T, S, k) float32 for ``topk``, rows sum to 1.  feats: (…, T, D) float32 for ``feats``.
    """

    kind: str
    ids: Optional[torch.Tensor] = None
    probs: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    feats: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown TokenInput kind {self.kind!r}; choose from {KINDS}")

    def __len__(self) -> int:
        return int(self.main.shape[0])

    @property
    def main(self) -> torch.Tensor:
        """The tensor that carries the frames: ids, probs or feats."""
        return {"ids": self.ids, "topk": self.ids, "probs": self.probs, "feats": self.feats}[self.kind]

    @property
    def n_streams(self) -> Optional[int]:
        """S, or None for features (a model splits those by its own source dims)."""
        if self.kind == "feats":
            return None
        return int(self.main.shape[-1 if self.kind == "ids" else -2])

    def nbytes(self) -> int:
        """Memory held by the tensors (for the dense vs top-k comparison)."""
        return sum(t.numel() * t.element_size() for t in (self.ids, self.probs, self.weights, self.feats)
                   if t is not None)

    def stream(self, s: int, size: Optional[int] = None) -> "TokenInput":
        """Stream ``s`` alone, its axis kept (length 1), for a model that embeds each stream on its own; ``size``
        (its K) drops the zero padding dense probabilities carry for streams with fewer centres."""
        if self.kind == "feats":
            raise ValueError("continuous features have no token streams")
        if self.kind == "ids":
            return TokenInput("ids", ids=self.ids[..., s:s + 1])
        if self.kind == "probs":
            return TokenInput("probs", probs=self.probs[..., s:s + 1, :size])
        return TokenInput("topk", ids=self.ids[..., s:s + 1, :], weights=self.weights[..., s:s + 1, :])

    def single_stream(self) -> Dict[str, torch.Tensor]:
        """The tensors of a one-stream input without the stream axis (the token file layouts)."""
        if self.kind == "feats":
            return {"feats": self.feats}
        if self.n_streams != 1:
            raise ValueError(f"{self.n_streams} token streams where one is expected")
        axis = -1 if self.kind == "ids" else -2
        return {name: t.squeeze(axis) for name, t in (("ids", self.ids), ("probs", self.probs),
                                                      ("weights", self.weights)) if t is not None}


def head_tag(name: str, tau: Optional[Tau | AutoTau] = None, top_k: Optional[int] = None) -> str:
    """A head's settings as output folder names write them: ``hard``, ``soft_tau2.9``, ``soft_tau2.9-3.1_topk32``,
    ``soft_tauauto-set-f0.1``."""
    return name + (f"_tau{tau_tag(tau)}" if tau is not None else "") + (f"_topk{top_k}" if top_k else "")


def run_dir_name(prefix: str, name: str, tau: Optional[Tau | AutoTau] = None, top_k: Optional[int] = None,
                 search: Optional[str] = None) -> str:
    """The one place output folders are named from head settings: ``decode_soft_tau2.9_greedy``, ``synth_hard``."""
    return f"{prefix}_{head_tag(name, tau, top_k)}" + (f"_{search}" if search else "")


class Head:
    """Base head: ``__call__(feats (T, Σ D_i)) -> TokenInput`` over the streams of ``codebooks``."""

    name = ""
    needs_codebook = True

    def __init__(self, codebooks: Optional[StreamCodebooks]):
        self.codebooks = codebooks

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        raise NotImplementedError

    @property
    def source_dims(self) -> Optional[List[int]]:
        """The feature dim of each source the head reads (None: any)."""
        return self.codebooks.source_dims if self.codebooks is not None else None

    @property
    def tau(self) -> Optional[Tau]:
        return None

    @property
    def top_k(self) -> Optional[int]:
        return None

    def settings(self) -> str:
        """Short tag for output folder names, e.g. ``soft_tau8_topk32``."""
        return head_tag(self.name, self.tau, self.top_k)


class HardHead(Head):
    """One-hot tokens: the id of each stream's nearest centre."""

    name = "hard"

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        return TokenInput("ids", ids=torch.cat([d2.argmin(dim=2) for d2 in self.codebooks.sqdist(feats)], dim=1))


class SoftHead(Head):
    """Soft assignment over each stream's centres at temperature ``tau`` (one per source, or ``"auto"`` with
    ``tau_factor`` and ``tau_scope``); ``top_k`` keeps the k nearest. ``use_faiss`` forces (True) or forbids (False)
    the faiss top-k search (default: by codebook size; with it, an utterance's automatic τ is measured on faiss's
    distances)."""

    name = "soft"

    def __init__(self, codebooks: StreamCodebooks, tau: Tau | str | AutoTau, top_k: Optional[int] = None,
                 use_faiss: Optional[bool] = None, tau_factor: Optional[float] = None, tau_scope: Optional[str] = None):
        super().__init__(codebooks)
        self.auto = auto_tau(tau, tau_factor, tau_scope)
        self._taus = None if self.auto else [check_tau(t) for t in per_source(tau, len(codebooks.sources), "tau")]
        smallest = min(codebooks.sizes)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                                  or not 1 <= top_k <= smallest):
            raise ValueError(f"soft head: top_k={top_k!r} must be in [1, K={smallest}]")
        self._top_k, self.use_faiss = top_k, use_faiss

    @property
    def tau(self) -> Tau | AutoTau:
        return self.auto or one_or_list(self._taus)

    @property
    def taus(self) -> List[float]:
        """τ of each source: fixed, or measured on the set (:meth:`fit_set`); an utterance-scope τ has none."""
        if self._taus is None:
            raise ValueError("soft head: tau auto over the set is measured on the whole set first (fit_set, as "
                             "`softtok asr decode` does), or give tau_scope utterance" if self.auto.scope == "set"
                             else "soft head: tau auto per utterance has no single τ")
        return self._taus

    @property
    def tau_per_utterance(self) -> bool:
        """True when τ is measured on each call's frames (one τ per utterance, none for the set)."""
        return self.auto is not None and self.auto.scope == "utterance"

    @property
    def top_k(self) -> Optional[int]:
        return self._top_k

    def fit_set(self, frames: Iterable[torch.Tensor]) -> List[float]:
        """Set-scope automatic τ: each source's median nearest squared distance over all of ``frames`` (every
        utterance of the set about to be tokenised, (T, Σ D_i) each) times the factor; returns the τ."""
        if self.auto is None or self.auto.scope != "set":
            raise ValueError(f"soft head: only tau auto over the set is fitted on a set, not {self.settings()}")
        nearest: List[List[torch.Tensor]] = [[] for _ in self.codebooks.sources]
        for x in frames:
            for found, codebook, part in zip(nearest, self.codebooks.sources, self.codebooks.split(x)):
                found.append(nearest_sqdist(codebook, part))
        self._taus = self.auto.taus([torch.cat(found) if found else torch.zeros(0) for found in nearest])
        return self._taus

    def _taus_for(self, nearest: Sequence[torch.Tensor]) -> List[float]:
        """τ of each source for these frames (their flat nearest squared distances): measured on them per utterance,
        else fixed or fitted."""
        return self.auto.taus(nearest) if self.tau_per_utterance else self.taus

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """−(d² − min d²)/τ per stream, (T, S, K): the max logit is exactly 0, so no overflow at any τ.

        Streams with fewer than K centres are padded with −inf (probability exactly 0).
        """
        d2s = self.codebooks.sqdist(feats)
        nearest = [d2.min(dim=2, keepdim=True).values for d2 in d2s]
        taus = self._taus_for([n.reshape(-1) for n in nearest])
        parts = [scaled_gaps(d2, n, tau) for d2, n, tau in zip(d2s, nearest, taus)]
        width = max(p.shape[2] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, width - p.shape[2]), value=-float("inf")) for p in parts]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        if self._top_k is None:
            return TokenInput("probs", probs=torch.softmax(self.logits(feats), dim=2))
        nearest = self.codebooks.nearest(feats, self._top_k, self.use_faiss)
        taus = self._taus_for([d2[:, :, 0].reshape(-1) for _, d2 in nearest])
        weights = [torch.softmax(scaled_gaps(d2, d2[:, :, :1], tau), dim=2) for (_, d2), tau in zip(nearest, taus)]
        return TokenInput("topk", ids=torch.cat([ids for ids, _ in nearest], dim=1), weights=torch.cat(weights, dim=1))


def auto_tau(tau: Any, factor: Optional[float], scope: Optional[str]) -> Optional[AutoTau]:
    """The :class:`AutoTau` a soft head's options ask for (``tau: auto`` with ``tau_factor``, ``tau_scope`` default
    ``set``), or None for a fixed τ; a factor or scope without ``tau: auto`` is a one-line error."""
    if isinstance(tau, AutoTau) and factor is None and scope is None:
        return tau
    if isinstance(tau, str) and tau == "auto":
        if factor is None:
            raise ValueError("soft head: tau auto needs tau_factor (the dev sweep's best factor, f*)")
        return AutoTau(factor, TAU_SCOPES[0] if scope is None else scope)
    if factor is not None or scope is not None:
        raise ValueError(f"soft head: tau_factor and tau_scope go with tau: auto, not tau: {tau!r}")
    return None


FLOAT32_TINY = torch.finfo(torch.float32).tiny  # below it a float32 τ is subnormal or 0 (0/0: NaN)


def scaled_gaps(d2: torch.Tensor, nearest: torch.Tensor, tau: float) -> torch.Tensor:
    """−(d² − nearest d²)/τ as float32 logits, 0 at the nearest centre, finite or −inf elsewhere for every τ > 0.

    Divided in float64 where τ is below float32's smallest normal number or the distances are float64 (magnitudes
    float32 cannot hold), so no finite input gives NaN and τ → 0 stays the hard one-hot.
    """
    gap = d2 - nearest
    if gap.dtype == torch.float64 or tau < FLOAT32_TINY:
        return (-(gap.double() / tau)).float()
    return -(gap / tau)


class ContinuousHead(Head):
    """The features pass through (the continuous-input baseline), checked against the codebooks' dims if given."""

    name = "continuous"
    needs_codebook = False

    def __init__(self, codebooks: Optional[StreamCodebooks] = None, source_dims: Optional[Sequence[int]] = None):
        super().__init__(codebooks)
        self._dims = list(source_dims) if source_dims is not None else None

    @property
    def source_dims(self) -> Optional[List[int]]:
        return self._dims if self._dims is not None else super().source_dims

    def __call__(self, feats: torch.Tensor) -> TokenInput:
        if self.codebooks is not None:
            for cb, x in zip(self.codebooks.sources, self.codebooks.split(feats)):
                cb.check_features(x)
        elif self.source_dims is not None:
            split_sources(feats, self.source_dims)
        return TokenInput("feats", feats=feats.float())


HEADS: Dict[str, Callable[..., Head]] = {"hard": HardHead, "soft": SoftHead, "continuous": ContinuousHead}


def stream_codebooks(codebooks: Codebooks, source_dims: Optional[Sequence[int]] = None) -> Optional[StreamCodebooks]:
    """One codebook, a list (one per source) or StreamCodebooks, as StreamCodebooks (None stays None)."""
    if codebooks is None or isinstance(codebooks, StreamCodebooks):
        return codebooks
    return StreamCodebooks([codebooks] if isinstance(codebooks, Codebook) else list(codebooks), source_dims)


def build_head(name: str, codebooks: Codebooks = None, source_dims: Optional[Sequence[int]] = None,
               **conf: Any) -> Head:
    """Build a head from the registry (``--head NAME --head-conf '{tau: 8}'``); ``codebooks``: one per source.

    ``source_dims`` (the feature dim of each source) defaults to the codebooks'; a continuous head without
    codebooks takes it to check the input.
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {sorted(HEADS)}")
    cls = HEADS[name]
    if cls.needs_codebook and codebooks is None:
        raise ValueError(f"head {name!r} needs a k-means codebook (--kmeans)")
    streams = stream_codebooks(codebooks, source_dims)
    conf = {k: v for k, v in conf.items() if v is not None}
    if name == "soft" and "tau" not in conf:
        raise ValueError("head 'soft' needs --tau")
    try:
        if cls is ContinuousHead:
            return ContinuousHead(streams, source_dims, **conf)
        return cls(streams, **conf)
    except TypeError as exc:
        raise ValueError(f"head {name!r}: bad options {sorted(conf)}: {exc}") from None


def input_sizes(head: Head, source_dims: Sequence[int]) -> Tuple[Any, Any]:
    """(n_tokens, feat_dim) of the model input ``head`` feeds, as configs record them: an int for one stream or
    source, a list (one per stream or source) for several; the other is None."""
    if head.name == "continuous":
        return None, one_or_list(list(source_dims))
    return one_or_list(head.codebooks.sizes), None


def add_head_args(p: argparse.ArgumentParser, default: Optional[str] = "hard", shortcuts: bool = True,
                  auto_tau: bool = False) -> None:
    """``--head`` (choices from the registry) and ``--head-conf``; ``shortcuts`` adds ``--tau`` and ``--top-k``;
    ``auto_tau`` lets ``--tau`` be ``auto`` and adds ``--tau-scope`` and ``--tau-factor``."""
    from softtok.common import int_at_least, yaml_mapping

    p.add_argument("--head", default=default, choices=sorted(HEADS),
                   help=f"input head (default: {default or 'the training head'})")
    if shortcuts:
        p.add_argument("--tau", type=tau_value if auto_tau else float,
                       help="soft temperature (> 0); --head-conf '{tau: [t1, t2]}' per source"
                       + ("; auto: --tau-factor × the median nearest squared distance of the input itself" if auto_tau
                          else ""))
        p.add_argument("--top-k", type=int_at_least(1), help="soft: keep the k nearest centres, renormalised")
    if auto_tau:
        p.add_argument("--tau-scope", choices=TAU_SCOPES,
                       help=f"--tau auto: the median over the whole set decoded or each utterance (default: "
                            f"{TAU_SCOPES[0]})")
        p.add_argument("--tau-factor", type=float, help="--tau auto: the factor (default: the model's dev f*)")
    p.add_argument("--head-conf", type=yaml_mapping, default={}, help="head options, e.g. '{tau: 2.0, top_k: 32}'")


def tau_value(text: str) -> float | str:
    """argparse type of ``--tau``: a number, or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


def head_conf_of(args: argparse.Namespace) -> Dict[str, Any]:
    """``--head-conf`` with ``--tau`` / ``--top-k`` / ``--tau-scope`` / ``--tau-factor`` (when given) on top."""
    shortcuts = {k: getattr(args, k, None) for k in ("tau", "top_k", "tau_scope", "tau_factor")}
    return {**args.head_conf, **{k: v for k, v in shortcuts.items() if v is not None}}
