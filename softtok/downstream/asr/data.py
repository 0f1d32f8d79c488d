"""ASR data: features through a head into TokenInputs (:class:`~softtok.downstream.data.TokenData`), paired with
character (or phone) targets."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from softtok.downstream.asr.model import IGNORE_ID, CharTokenizer
from softtok.downstream.data import ReadOnAccess, TokenData
from softtok.downstream.scoring import normalize_text
from softtok.tokenizers.datadir import DataError, read_kaldi_map
from softtok.tokenizers.heads import Head, TokenInput

Batch = Tuple[List[str], TokenInput, torch.Tensor, torch.Tensor, torch.Tensor]


def read_transcripts(path: str | Path, max_chars: int) -> Dict[str, str]:
    """A Kaldi ``text`` file for training; a transcript longer than ``max_chars`` characters is refused, naming the
    utterance, before anything is allocated for it (the attention decoder's memory grows with its square)."""
    text = read_kaldi_map(Path(path))
    for utt, line in text.items():
        if len(line) > max_chars:
            raise DataError(f"{path}: utterance {utt!r} has a transcript of {len(line)} characters, more than "
                            f"max_text_chars={max_chars} (a config key)")
    return text


class TokenASRData(TokenData):
    """Utterances of one set (features read on access, frame counts) with optional normalised transcripts."""

    def __init__(self, feats_scp: str | ReadOnAccess, text: Optional[Dict[str, str]] = None,
                 max_frames: Optional[int] = None, preload: bool = False):
        super().__init__(feats_scp, max_frames, preload)
        self.text = None
        if text is not None:
            missing = [u for u in self.feats if u not in text]
            if missing:
                raise ValueError(f"{feats_scp}: utterance {missing[0]!r} has no transcript ({len(missing)} missing)")
            self.text = {u: normalize_text(text[u]) for u in self.feats}

    def collate(self, utts: Sequence[str], head: Head, tokenizer: Optional[CharTokenizer] = None,
                device: str = "cpu") -> Batch:
        """Padded (utts, TokenInput, lengths, targets, target lengths) for one batch."""
        tokens, lengths = self.tokens(utts, head, device)
        if tokenizer is not None and self.text is not None:
            ys = [torch.tensor(tokenizer.encode(self.text[u]), dtype=torch.long) for u in utts]
            y_lens = torch.tensor([len(y) for y in ys], dtype=torch.long)
            ys_pad = torch.nn.utils.rnn.pad_sequence(ys, batch_first=True, padding_value=IGNORE_ID)
        else:
            y_lens = ys_pad = torch.zeros(0, dtype=torch.long)
        return list(utts), tokens, lengths, ys_pad.to(device), y_lens.to(device)
