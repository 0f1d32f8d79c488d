"""Adapters: soft inference on hard-token models trained in other toolkits, loaded as those toolkits saved them.

``softtok import-model FORMAT ...`` packs such a model with its codebook(s) and featurizer spec into a bundle
(``softtok.yaml`` ``model.format`` names the adapter), so ``softtok.load``, ``transcribe`` and ``resynthesize``
take it like a softtok model. An adapter module, registered in :data:`ADAPTERS` and imported on first use (its
toolkit is heavy), provides:

- ``KIND``: ``"asr"`` or ``"vocoder"``;
- ``add_args(parser)``: its import options (the model's files, its codebook, explicit opt-ins);
- ``collect(args) -> Imported``: what goes into the bundle, every refusal a one-line :class:`AdapterError` naming
  the config key or file;
- ASR: ``load_decoder(root, spec, head, search, device)``, given the bundle folder, its ``softtok.yaml`` and the
  built :class:`~softtok.tokenizers.heads.Head`: an object with ``head``, ``groups(data, batch_frames)`` and
  ``stream(data, groups)`` as :class:`~softtok.downstream.asr.decode.TokenASRInference` has (``data`` a
  :class:`~softtok.downstream.asr.data.TokenASRData`);
- vocoder: ``load_renderer(root, spec, device) -> (render(tokens, lengths) -> wave, {"sample_rate": …})``, as
  softtok's own vocoders' ``load_renderer``.

An adapter module imports its toolkit inside its functions, never at module level: ``softtok import-model --help``
imports every adapter to list its options.

Only models whose input is one embedding row per frame-rate k-means unit can be soft-decoded (Σ_k p_k E_k is
undefined for a BPE piece or a deduplicated run); adapters refuse the others.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional

from softtok.tokenizers.kmeans import Codebook

# bundle format name → module (imported on first use)
ADAPTERS: Dict[str, str] = {
    "code_hifigan": "softtok.adapters.code_hifigan",
    "pwg_hifigan": "softtok.adapters.pwg_hifigan",
    "espnet_asr2": "softtok.adapters.espnet_asr2",
    "speechbrain_dasb": "softtok.adapters.speechbrain_dasb",
}


class AdapterError(ValueError):
    """A model an adapter cannot soft-decode as it is, or files it cannot read."""


@dataclass
class Imported:
    """What an adapter puts into a bundle.

    files: bundle name → file to copy; model: ``spec["model"]`` (what the adapter's loader needs, ``format`` is
    added; a ``frame_rate`` there is checked against each source's); codebooks: one per source; layers: each
    source's featurizer layer where the sources differ only in it (per-layer k-means), else None (the featurizer's
    own); max_frames: longest window to decode at once.
    """

    files: Dict[str, Path]
    model: Dict[str, Any]
    codebooks: List[Codebook]
    layers: Optional[List[Optional[int]]] = None
    max_frames: int = 1500
    notes: List[str] = field(default_factory=list)


def adapter(name: str) -> ModuleType:
    """The adapter module of a bundle format; an unknown name is a one-line error."""
    if name not in ADAPTERS:
        raise AdapterError(f"unknown model format {name!r}; choose from {sorted(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name])
