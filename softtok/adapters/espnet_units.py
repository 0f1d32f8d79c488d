"""Soft input for an ESPnet unit model: its frontend's embedding lookup replaced by softtok's TokenEmbedding, the rest
(positional encoding, encoder, CTC/attention beam search, text conversion) ESPnet's own ``Text2Text``.

ESPnet's MT-task models prepend ``<sos/eos>`` to the source ids before the frontend; that row stays ESPnet's lookup,
every unit frame embeds the head's TokenInput: hard ids, dense p @ E or top-k Σ_j w_j E[id_j] over the table rows
of the clusters (:class:`~softtok.downstream.embedding.TokenEmbedding`), so τ → 0 gives ESPnet's hard rows exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from softtok.downstream.embedding import TokenEmbedding
from softtok.tokenizers.heads import Head, TokenInput

SEARCHES = ("greedy", "beam")


class UnitEmbedding(nn.Module):
    """Stands in for the frontend's ``nn.Embedding``: the last T positions embed the TokenInput given to
    :meth:`feeding` (cluster k → row ``rows[k]`` of ESPnet's table), the prefix (``<sos/eos>``) ESPnet's lookup."""

    def __init__(self, table: nn.Embedding, rows: Sequence[int]):
        super().__init__()
        self.table = table
        self.units = TokenEmbedding(len(rows), table.embedding_dim).to(table.weight.device)
        with torch.no_grad():
            self.units.tables[0].weight.copy_(table.weight[torch.as_tensor(rows, device=table.weight.device)])
        self._tokens: Optional[TokenInput] = None

    @contextlib.contextmanager
    def feeding(self, tokens: TokenInput) -> Iterator[None]:
        """Embed ``tokens`` (1, T, …) at the unit positions of the next forward calls."""
        self._tokens = tokens
        try:
            yield
        finally:
            self._tokens = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B, L, d): the prefix looked up, the last T positions (placeholders) the TokenInput's."""
        if self._tokens is None:
            raise RuntimeError("UnitEmbedding: no TokenInput given (use feeding())")
        frames = self.units(self._tokens)
        prefix = ids.shape[1] - frames.shape[1]
        if prefix < 0 or frames.shape[0] != ids.shape[0]:
            raise ValueError(f"frontend input {tuple(ids.shape)} does not hold the {tuple(frames.shape[:2])} frames")
        return torch.cat([self.table(ids[:, :prefix]), frames.to(self.table.weight.dtype)], dim=1)


def install(frontend: nn.Module, rows: Sequence[int]) -> UnitEmbedding:
    """Put a UnitEmbedding where ESPnet's ``Embedding`` frontend looks ids up (``embed[0]``, before its positional
    encoding)."""
    unit = UnitEmbedding(frontend.embed[0], rows)
    frontend.embed[0] = unit
    return unit


@contextlib.contextmanager
def quiet_espnet() -> Iterator[None]:
    """ESPnet logs its whole beam search module at INFO on building it and each utterance's search while decoding;
    keep that to warnings (its loggers follow the root's level)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def utterance(tokens: TokenInput, i: int, length: int) -> TokenInput:
    """Utterance ``i`` of a padded batch, (1, length, …)."""
    fields = {f.name: getattr(tokens, f.name) for f in dataclasses.fields(tokens) if f.name != "kind"}
    return TokenInput(tokens.kind, **{name: t[i:i + 1, :length] for name, t in fields.items() if t is not None})


def best_text(results: List[Tuple[Any, ...]]) -> str:
    """The 1-best text of Text2Text's results (its tokens joined where the config has no text converter)."""
    if not results:
        return ""
    text, tokens = results[0][0], results[0][1]
    return text if text is not None else " ".join(tokens)


class ESPnetUnitDecoder:
    """ESPnet's ``Text2Text`` (the asr2 recipes' decoder) on a head's TokenInputs, one utterance at a time.

    ``greedy``: the bundle's decoding settings with beam size 1; ``beam``: as the bundle's decoding config says.
    """

    def __init__(self, root: Path, model: Dict[str, Any], head: Head, search: str, device: str):
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; choose from {SEARCHES}")
        if head.name == "continuous":
            raise ValueError(f"{root}: an ESPnet unit model takes tokens (head hard or soft), not continuous features")
        rows = model["unit_rows"]
        if head.codebooks.sizes != [len(rows)]:
            raise ValueError(f"{root}: head over K={head.codebooks.sizes} clusters, the model maps K={len(rows)}")
        from espnet2.bin.mt_inference import Text2Text

        settings = {**model["decode"], **({"beam_size": 1} if search == "greedy" else {})}
        bpemodel = str(root / model["bpemodel"]) if model.get("bpemodel") else None
        with quiet_espnet():
            self.text2text = Text2Text(mt_train_config=str(root / "config.yaml"),
                                       mt_model_file=str(root / "model.pth"), bpemodel=bpemodel, device=device,
                                       **settings)
        self.units = install(self.text2text.mt_model.frontend, rows)
        self.head, self.search, self.device = head, search, device

    def groups(self, data: Any, batch_frames: int = 0) -> List[List[str]]:
        """One utterance per group: Text2Text decodes one at a time (``batch_frames`` is not used)."""
        return [[utt] for utt in data.utts]

    def nbest(self, tokens: TokenInput) -> List[Tuple[Any, ...]]:
        """ESPnet's n-best ``(text, tokens, token ids, Hypothesis)`` of one utterance's TokenInput (1, T, …)."""
        placeholder = torch.zeros(tokens.main.shape[1], dtype=torch.long)
        with self.units.feeding(tokens), quiet_espnet():
            return self.text2text(placeholder)

    @torch.inference_mode()
    def stream(self, data: Any, groups: Iterable[List[str]]) -> Iterator[Dict[str, str]]:
        """The 1-best text of each group's utterances as soon as they are decoded."""
        for group in groups:
            utts, tokens, lengths, _, _ = data.collate(group, self.head, device=self.device)
            yield {utt: best_text(self.nbest(utterance(tokens, i, int(lengths[i])))) for i, utt in enumerate(utts)}
