"""Token ASR: TokenEmbedding → SpecAugment-style masking → espnet2 encoder → CTC + attention decoder.

The same class serves every condition: a discrete model (K-token table per stream) is trained on
hard ids and decoded with hard, soft or top-k inputs; the ``continuous`` baseline swaps
the tables for a linear layer over the features. List sizes (``n_tokens: [K_1, ..., K_S]``) make a
multi-stream model whose embedding sums one table (or linear layer) per stream.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from softtok.downstream.embedding import TokenEmbedding
from softtok.downstream.fused import Centroids
from softtok.tokenizers.heads import TokenInput

BLANK, UNK = "<blank>", "<unk>"
SOS_EOS = "<sos/eos>"
IGNORE_ID = -1


class CharTokenizer:
    """Characters of normalised upper-case text; '▁' marks word boundaries (ESPnet's <space>)."""

    SPACE = "▁"

    def __init__(self, chars: Sequence[str]):
        self.token_list: List[str] = [BLANK, UNK, *chars, SOS_EOS]
        self.index = {c: i for i, c in enumerate(self.token_list)}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "CharTokenizer":
        """Build the character inventory of a training set (sorted, deterministic)."""
        chars = sorted({c for t in texts for c in t.replace(" ", cls.SPACE)})
        return cls(chars)

    def encode(self, text: str) -> List[int]:
        unk = self.index[UNK]
        return [self.index.get(c, unk) for c in text.replace(" ", self.SPACE)]

    def decode(self, ids: Sequence[int]) -> str:
        special = {0, len(self.token_list) - 1}
        chars = [self.token_list[i] for i in ids if i not in special]
        return "".join(chars).replace(self.SPACE, " ").strip()

    def __len__(self) -> int:
        return len(self.token_list)


class PhoneTokenizer(CharTokenizer):
    """Space-separated phone labels (``K AO L``): one token per phone, no word-boundary symbol."""

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "PhoneTokenizer":
        """Build the phone inventory of a training set (sorted, deterministic)."""
        return cls(sorted({p for t in texts for p in t.split()}))

    def encode(self, text: str) -> List[int]:
        unk = self.index[UNK]
        return [self.index.get(p, unk) for p in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        special = {0, len(self.token_list) - 1}
        return " ".join(self.token_list[i] for i in ids if i not in special)


TOKENIZERS = {"char": CharTokenizer, "phone": PhoneTokenizer}


def tokenizer_class(token_type: str) -> type:
    """The output-unit tokenizer of a config's ``token_type``: ``char`` (default) or ``phone``."""
    if token_type not in TOKENIZERS:
        raise ValueError(f"unknown token_type {token_type!r}; choose from {sorted(TOKENIZERS)}")
    return TOKENIZERS[token_type]


class InputMasking(nn.Module):
    """SpecAugment-style masking of the embedded input sequence (B, T, d): time spans and channel bands."""

    def __init__(self, num_time_masks: int = 2, time_mask_ratio: float = 0.05, num_channel_masks: int = 2,
                 channel_mask_width: int = 16):
        super().__init__()
        self.num_time_masks, self.time_mask_ratio = num_time_masks, time_mask_ratio
        self.num_channel_masks, self.channel_mask_width = num_channel_masks, channel_mask_width

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        B, T, D = x.shape
        keep = torch.ones(B, T, D, dtype=torch.bool, device=x.device)
        for b in range(B):
            max_w = max(1, int(self.time_mask_ratio * int(lengths[b])))
            for _ in range(self.num_time_masks):
                w = int(torch.randint(0, max_w + 1, ()))
                t0 = int(torch.randint(0, max(1, int(lengths[b]) - w), ()))
                keep[b, t0:t0 + w, :] = False
            for _ in range(self.num_channel_masks):
                w = int(torch.randint(0, self.channel_mask_width + 1, ()))
                c0 = int(torch.randint(0, max(1, D - w), ()))
                keep[b, :, c0:c0 + w] = False
        return x * keep


def build_encoder(name: str, input_size: int, conf: Dict[str, Any]) -> nn.Module:
    """An espnet2 encoder by name: ``conformer`` or ``e_branchformer``."""
    if name == "conformer":
        from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

        return ConformerEncoder(input_size, use_flash_attn=False, **conf)
    if name == "e_branchformer":
        from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder

        return EBranchformerEncoder(input_size, use_flash_attn=False, **conf)
    raise ValueError(f"unknown encoder {name!r}; choose conformer or e_branchformer")


class TokenASR(nn.Module):
    """Hybrid CTC/attention ASR over token inputs, built from espnet2 modules."""

    def __init__(self, vocab_size: int, n_tokens: Optional[int | List[int]] = None,
                 feat_dim: Optional[int | List[int]] = None,
                 embed_dim: int = 256, encoder: str = "conformer", encoder_conf: Optional[Dict[str, Any]] = None,
                 decoder_conf: Optional[Dict[str, Any]] = None, ctc_weight: float = 0.3, lsm_weight: float = 0.1,
                 masking_conf: Optional[Dict[str, Any]] = None):
        super().__init__()
        from espnet2.asr.ctc import CTC
        from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
        from espnet.nets.pytorch_backend.transformer.label_smoothing_loss import LabelSmoothingLoss

        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        self.vocab_size, self.ctc_weight = vocab_size, ctc_weight
        self.sos = self.eos = vocab_size - 1
        self.embedding = TokenEmbedding(n_tokens, embed_dim, feat_dim)
        self.masking = InputMasking(**(masking_conf or {}))
        self.encoder = build_encoder(encoder, embed_dim, encoder_conf or {})
        enc_dim = self.encoder.output_size()
        self.ctc = CTC(vocab_size, enc_dim)
        self.decoder = TransformerDecoder(vocab_size, enc_dim, use_flash_attn=False, **(decoder_conf or {})) \
            if ctc_weight < 1.0 else None
        self.att_loss = LabelSmoothingLoss(vocab_size, IGNORE_ID, lsm_weight, normalize_length=False)

    def encode(self, tokens: TokenInput, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embed, mask (training only) and encode: (B, T', enc_dim), lengths (B,)."""
        return self.encode_embedded(self.embedding(tokens), lengths)

    def encode_soft_features(self, feats: torch.Tensor, lengths: torch.Tensor, centroids: Centroids,
                             tau: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """``encode`` of the dense soft input of padded features (B, T, D), embedded in one fused call."""
        return self.encode_embedded(self.embedding.soft_from_features(feats, centroids, tau, lengths), lengths)

    def encode_embedded(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mask (training only) and encode an embedded sequence (B, T, d)."""
        enc, enc_lens, _ = self.encoder(self.masking(x, lengths), lengths)
        return enc, enc_lens

    def forward(self, tokens: TokenInput, lengths: torch.Tensor, ys: torch.Tensor,
                y_lens: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Hybrid loss for a padded batch (ys padded with IGNORE_ID); returns (loss, stats)."""
        from espnet.nets.pytorch_backend.nets_utils import th_accuracy
        from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos

        enc, enc_lens = self.encode(tokens, lengths)
        stats: Dict[str, float] = {}
        loss_ctc = self.ctc(enc, enc_lens, ys.clamp_min(0), y_lens) if self.ctc_weight > 0 else enc.new_zeros(())
        stats["loss_ctc"] = loss_ctc.item()
        loss = self.ctc_weight * loss_ctc
        if self.decoder is not None:
            ys_in, ys_out = add_sos_eos(ys, self.sos, self.eos, IGNORE_ID)
            dec, _ = self.decoder(enc, enc_lens, ys_in, y_lens + 1)
            loss_att = self.att_loss(dec, ys_out)
            stats["loss_att"] = loss_att.item()
            stats["acc"] = float(th_accuracy(dec.view(-1, self.vocab_size), ys_out, ignore_label=IGNORE_ID))
            loss = loss + (1.0 - self.ctc_weight) * loss_att
        stats["loss"] = loss.item()
        return loss, stats
