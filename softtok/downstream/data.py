"""What every downstream model's data shares: features read on access, length-sorted batches, TokenInput batching.

Heads run on the fly, so one set of dumped features serves hard, soft and continuous inputs alike. Several
feats.scp (a comma list, e.g. one per SSL layer) are stacked frame by frame into one matrix per utterance; the
head splits it again by source. Features are read from the arks when a batch is collated (as ESPnet does): only
the scp index and frame counts stay in memory, unless ``preload``.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from softtok.common import prefetch
from softtok.tokenizers.fileio import load_matrix, load_num_frames, read_scp_entries
from softtok.tokenizers.heads import Head, TokenInput
from softtok.tokenizers.streams import check_frame_counts, split_list, stack_sources
from softtok.tokenizers.tau import DegenerateTau

logger = logging.getLogger(__name__)


class ReadOnAccess:
    """A read-only map utterance -> array, read (:meth:`read`) when accessed unless :meth:`preload` holds it.

    Subclasses set ``self.index`` (utterance -> length, in order) and ``self._memory = {}`` and define ``read``.
    """

    index: Dict[str, int]
    _memory: Dict[str, Any]

    def read(self, utt: str) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __contains__(self, utt: str) -> bool:
        return utt in self.index

    def __getitem__(self, utt: str) -> Any:
        held = self._memory.get(utt)
        return held if held is not None else self.read(utt)

    def preload(self, utts: Sequence[str]) -> None:
        """Hold these utterances in memory, read exactly as on access (small sets: saves a read per epoch)."""
        self._memory = {u: self.read(u) for u in utts}
        size = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in self._memory.values())
        logger.info("%s: %d utterances preloaded (%.1f MB)", self, len(self._memory), size / 1e6)


class ScpFeatures(ReadOnAccess):
    """Features of one feats.scp or a comma list of them (stacked), read from the arks on access.

    Holds the scp index, each utterance's frame count (``utt2num_frames`` or the ark headers) and each source's
    dim; :meth:`preload` keeps chosen utterances in memory, read exactly as on access, so batches are identical.
    """

    def __init__(self, feats_scp: str):
        self.names = split_list(feats_scp)
        self.entries = [dict(read_scp_entries(p)) for p in self.names]
        for name, src in zip(self.names[1:], self.entries[1:]):
            missing = [u for u in self.entries[0] if u not in src]
            if missing or len(src) != len(self.entries[0]):
                raise ValueError(f"{name}: utterances differ from {self.names[0]} ({len(src)} vs "
                                 f"{len(self.entries[0])}" + (f", {missing[0]!r} missing)" if missing else ")"))
        counts = [load_num_frames(p) for p in self.names]
        for utt in self.entries[0]:
            check_frame_counts([c[utt] for c in counts], self.names, utt)
        self.num_frames: Dict[str, int] = counts[0]
        self.index = self.num_frames
        first = next(iter(self.entries[0]))
        self.dims = [load_matrix(p, first, e[first]).shape[1] for p, e in zip(self.names, self.entries)]
        self._memory: Dict[str, np.ndarray] = {}

    def __str__(self) -> str:
        return ",".join(self.names)

    def read(self, utt: str) -> np.ndarray:
        """One utterance's (T, Σ dims) float32 matrix, read from the arks now."""
        return stack_sources([self._read_source(i, utt) for i in range(len(self.names))], self.names, utt)

    def _read_source(self, i: int, utt: str) -> np.ndarray:
        """One source's matrix, checked against the frame count and dim the index promised."""
        mat = np.array(load_matrix(self.names[i], utt, self.entries[i][utt]), dtype=np.float32)
        expected = (self.num_frames[utt], self.dims[i])
        if mat.shape != expected:
            raise ValueError(f"{self.names[i]}: utterance {utt!r} has shape {mat.shape}, expected {expected} "
                             f"(utt2num_frames or the first matrix's dim; a stale dump?)")
        return mat


class ArrayFeatures(ReadOnAccess):
    """Features already in memory (utterance -> (T, Σ dims) float32), e.g. computed from audio at inference."""

    def __init__(self, arrays: Dict[str, np.ndarray], dims: Sequence[int]):
        self._memory = {u: np.asarray(a, dtype=np.float32) for u, a in arrays.items()}
        self.num_frames = {u: int(len(a)) for u, a in self._memory.items()}
        self.index, self.dims = self.num_frames, list(dims)

    def __str__(self) -> str:
        return f"{len(self)} utterances in memory"

    def read(self, utt: str) -> np.ndarray:
        return self._memory[utt]


class TokenData:
    """Utterances of one set: features (a feats.scp read on access, or :class:`ArrayFeatures`) and their frame
    counts, sorted by length.

    ``max_frames`` drops longer utterances; ``preload`` reads the kept utterances' features at start.
    Subclasses add what the model is trained towards (transcripts, audio targets) and their ``collate``.
    """

    def __init__(self, feats_scp: str | ReadOnAccess, max_frames: Optional[int] = None, preload: bool = False):
        self.feats = ScpFeatures(feats_scp) if isinstance(feats_scp, str) else feats_scp
        self.source_dims, self.num_frames = self.feats.dims, self.feats.num_frames
        kept = [u for u in self.feats if not max_frames or self.num_frames[u] <= max_frames]
        self.utts = sorted(kept, key=self.num_frames.__getitem__)
        if preload:
            self.feats.preload(self.utts)

    def batches(self, max_batch_frames: int, shuffle: bool = False, seed: int = 0) -> List[List[str]]:
        """Length-sorted utterance groups of at most ``max_batch_frames`` padded frames each."""
        groups, current = [], []
        for utt in self.utts:
            longest = self.num_frames[utt]  # sorted ascending: the newest is the longest
            if current and longest * (len(current) + 1) > max_batch_frames:
                groups.append(current)
                current = []
            current.append(utt)
        if current:
            groups.append(current)
        if shuffle:
            random.Random(seed).shuffle(groups)
        return groups

    def tokens(self, utts: Sequence[str], head: Head, device: str = "cpu") -> Tuple[TokenInput, torch.Tensor]:
        """The head's padded TokenInput (B, T, …) of these utterances and their lengths (B,) on ``device``."""
        tokens, lengths = pad_token_inputs([self.head_input(head, u, device) for u in utts])
        return tokens, lengths.to(device)

    def head_input(self, head: Head, utt: str, device: str = "cpu") -> TokenInput:
        """One utterance through ``head``; an automatic τ that cannot be measured on it names the utterance."""
        try:
            return head(torch.from_numpy(self.feats[utt]).to(device))
        except DegenerateTau as exc:
            raise DegenerateTau(f"{self.feats}: utterance {utt!r}: {exc}") from None


def iterate(data: Any, groups: List[List[str]], head: Head, tokenizer: Any, device: str = "cpu",
            prefetch_batches: int = 0) -> Iterator[Tuple]:
    """Collated batches of the given groups, in order; ``prefetch_batches`` > 0 collates that many ahead in a
    background thread (:func:`softtok.common.prefetch`), so reading overlaps a GPU step."""
    return prefetch((data.collate(group, head, tokenizer, device) for group in groups), prefetch_batches)


def pad_token_inputs(items: List[TokenInput], pad_id: int = 0) -> Tuple[TokenInput, torch.Tensor]:
    """Batch per-utterance TokenInputs (T, …) of one kind and stream count into padded (B, T, …) plus lengths (B,).

    Soft padding is the one-hot of ``pad_id`` in every stream, so padded frames embed as E[pad_id] as they do for
    hard ids (not as 0): the encoder's convolutions see padded frames, and a model trained on hard tokens saw
    E[pad_id] there.
    """
    kinds = {t.kind for t in items}
    if len(kinds) != 1:
        raise ValueError(f"cannot batch mixed TokenInput kinds {sorted(kinds)}")
    streams = {t.n_streams for t in items}
    if len(streams) != 1:
        raise ValueError(f"cannot batch inputs with different stream counts {sorted(streams)}")
    kind = kinds.pop()
    lengths = torch.tensor([len(t) for t in items], dtype=torch.long)

    def pad(tensors: List[torch.Tensor], value: float = 0) -> torch.Tensor:
        return nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)

    if kind == "ids":
        return TokenInput("ids", ids=pad([t.ids for t in items], pad_id)), lengths
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
