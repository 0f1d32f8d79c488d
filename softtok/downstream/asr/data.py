"""ASR data: features (feats.scp) through a head into TokenInputs, paired with character targets.

Heads run on the fly, so one set of dumped features serves hard, soft and continuous
inputs alike. Batches are built from length-sorted utterances under a frame budget. Several feats.scp
(a comma list, e.g. one per SSL layer) are stacked frame by frame into one matrix per utterance; a
multi-stream head splits it again (``source_dims``).
"""

from __future__ import annotations

import random
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from softtok.downstream.embedding import pad_token_inputs
from softtok.downstream.scoring import normalize_text
from softtok.tokenizers.fileio import load_scp_dict
from softtok.tokenizers.heads import Head, TokenInput
from softtok.tokenizers.streams import StreamTokenInput, split_list, stack_sources
from softtok.downstream.asr.model import IGNORE_ID, CharTokenizer

Batch = Tuple[List[str], TokenInput | StreamTokenInput, torch.Tensor, torch.Tensor, torch.Tensor]


def load_sources(feats_scp: str) -> Tuple[Dict[str, np.ndarray], List[int]]:
    """Features of every utterance of one feats.scp or a comma list of them (stacked), and each source's dim."""
    names = split_list(feats_scp)
    sources = [{k: np.array(v, dtype=np.float32) for k, v in load_scp_dict(p).items()} for p in names]
    for name, src in zip(names[1:], sources[1:]):
        missing = [u for u in sources[0] if u not in src]
        if missing or len(src) != len(sources[0]):
            raise ValueError(f"{name}: utterances differ from {names[0]} ({len(src)} vs {len(sources[0])}"
                             + (f", {missing[0]!r} missing)" if missing else ")"))
    dims = [next(iter(src.values())).shape[1] for src in sources]
    feats = {u: stack_sources([src[u] for src in sources], names, u) for u in sources[0]}
    return feats, dims


class TokenASRData:
    """Utterances of one set held in memory: features, optional normalised text."""

    def __init__(self, feats_scp: str, text: Optional[Dict[str, str]] = None, max_frames: Optional[int] = None):
        self.feats, self.source_dims = load_sources(feats_scp)
        if text is not None:
            missing = [u for u in self.feats if u not in text]
            if missing:
                raise ValueError(f"{feats_scp}: utterance {missing[0]!r} has no transcript ({len(missing)} missing)")
            self.text = {u: normalize_text(text[u]) for u in self.feats}
        else:
            self.text = None
        if max_frames:
            self.feats = {u: f for u, f in self.feats.items() if len(f) <= max_frames}
        self.utts = sorted(self.feats, key=lambda u: len(self.feats[u]))

    def batches(self, max_batch_frames: int, shuffle: bool = False, seed: int = 0) -> List[List[str]]:
        """Length-sorted utterance groups of at most ``max_batch_frames`` padded frames each."""
        groups, current = [], []
        for utt in self.utts:
            longest = len(self.feats[utt])  # sorted ascending: the newest is the longest
            if current and longest * (len(current) + 1) > max_batch_frames:
                groups.append(current)
                current = []
            current.append(utt)
        if current:
            groups.append(current)
        if shuffle:
            random.Random(seed).shuffle(groups)
        return groups

    def collate(self, utts: Sequence[str], head: Head, tokenizer: Optional[CharTokenizer] = None,
                device: str = "cpu") -> Batch:
        """Padded (utts, TokenInput, lengths, targets, target lengths) for one batch."""
        items = [head(torch.from_numpy(self.feats[u]).to(device)) for u in utts]
        tokens, lengths = pad_token_inputs(items)
        if tokenizer is not None and self.text is not None:
            ys = [torch.tensor(tokenizer.encode(self.text[u]), dtype=torch.long) for u in utts]
            y_lens = torch.tensor([len(y) for y in ys], dtype=torch.long)
            ys_pad = torch.nn.utils.rnn.pad_sequence(ys, batch_first=True, padding_value=IGNORE_ID)
        else:
            y_lens = ys_pad = torch.zeros(0, dtype=torch.long)
        return list(utts), tokens, lengths.to(device), ys_pad.to(device), y_lens.to(device)


def iterate(data: TokenASRData, groups: List[List[str]], head: Head, tokenizer: Optional[CharTokenizer],
            device: str = "cpu") -> Iterator[Batch]:
    """Collated batches of the given groups, in order."""
    for group in groups:
        yield data.collate(group, head, tokenizer, device)
