"""RankMe per encoder layer: an unsupervised probe of which layer carries the most dimensions.

One forward pass per utterance through all layers of an encoder featurizer (SSL or Whisper; its
``layer_outputs`` gives every layer's output, the same as ``--layer N`` features), or RankMe of
already dumped feats.scp files (one per layer or feature).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from softtok.analysis.metrics import GramStats
from softtok.tokenizers.audio import read_utterance
from softtok.tokenizers.datadir import evenly_spaced, load_data_dir
from softtok.tokenizers.features import build_featurizer
from softtok.tokenizers.features.base import check_layer, featurizer_class
from softtok.tokenizers.fileio import iter_scp
from softtok.tokenizers.jobs import feature_spec_of

logger = logging.getLogger(__name__)


class LayerOutputs:
    """Every layer's output (T, dim) of one encoder featurizer (SSL or Whisper) built to its last layer."""

    def __init__(self, feature: str, checkpoint: Optional[str], device: Optional[str] = None):
        self.num_layers = featurizer_class(feature).count_layers(checkpoint)
        self.featurizer = build_featurizer(feature, checkpoint=checkpoint, layer=self.num_layers,
                                           device=device or "cpu")

    def __call__(self, wave: torch.Tensor) -> List[torch.Tensor]:
        """[layer 1 output, ..., layer N output] of one 16 kHz waveform, each (T, dim)."""
        outs = self.featurizer.layer_outputs(wave)
        if len(outs) != self.num_layers:
            raise RuntimeError(f"got {len(outs)} layer outputs for {self.num_layers} layers")
        return outs


def rankme_layers(data_dir: str, feature: str, checkpoint: Optional[str], layers: Optional[Sequence[int]] = None,
                  max_utts: Optional[int] = 200, device: Optional[str] = None) -> Dict[str, Any]:
    """RankMe of each layer's frames over (an evenly spaced subset of) a data dir's utterances."""
    t0, data = time.perf_counter(), load_data_dir(data_dir)
    utts = evenly_spaced(data.utt_ids, max_utts) if max_utts else data.utt_ids
    outputs = LayerOutputs(feature, checkpoint, device)
    chosen = list(layers) if layers else list(range(1, outputs.num_layers + 1))
    for layer in chosen:
        check_layer(layer, outputs.num_layers, outputs.featurizer.checkpoint)
    grams = {l: GramStats() for l in chosen}
    for utt in utts:
        per_layer = outputs(read_utterance(data, utt))
        for l in chosen:
            grams[l].update(per_layer[l - 1])
    rows = [{"layer": l, "rankme": grams[l].rankme(), "frames": grams[l].frames, "dim": outputs.featurizer.dim}
            for l in chosen]
    source = {"data_dir": str(data_dir), "feature": feature, "checkpoint": outputs.featurizer.checkpoint,
              "utts": len(utts), "seconds": round(time.perf_counter() - t0, 1)}
    if outputs.featurizer.layers_note:
        source["note"] = outputs.featurizer.layers_note
    return {"source": source, "rows": rows}


def rankme_feats(feats: Sequence[str], max_utts: Optional[int] = None) -> Dict[str, Any]:
    """RankMe of each dumped feats.scp (labelled by its feats.yaml feature and layer)."""
    rows = []
    for scp in feats:
        spec, gram = feature_spec_of(scp), GramStats()
        for i, (_, mat) in enumerate(iter_scp(scp)):
            if max_utts and i >= max_utts:
                break
            gram.update(torch.from_numpy(mat.astype("float32")))
        rows.append({"feats": str(scp), "feature": spec.get("feature"), "layer": spec.get("layer"),
                     "rankme": gram.rankme(), "frames": gram.frames, "dim": spec.get("dim")})
    return {"source": {"feats": [str(f) for f in feats]}, "rows": rows}
