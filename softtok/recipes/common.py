"""What the recipe stage modules (:mod:`.asr`, :mod:`.voc`) share: the τ grid and training summaries (report and
figure helpers, shared with the analysis, are in :mod:`softtok.reporting`).

The τ grid is multiples of the median squared distance of (dev) frames to their nearest centroid, so one list
of factors means the same sharpness whatever the feature scale or K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.kmeans import Codebook, median_nearest_sqdist


def tau_of(factor: float, scale: float) -> float:
    """τ = factor × scale to 4 significant digits: short, stable directory names (``..._tau2.9``)."""
    return float(f"{factor * scale:.4g}")


def tau_grid(codebook: Codebook, feats: str, factors: Sequence[float]) -> Tuple[float, List[Tuple[float, float]]]:
    """(median squared nearest-centroid distance of ``feats``, [(factor, τ), ...]) for a τ sweep."""
    scale = median_nearest_sqdist(codebook, feats)
    return scale, [(f, tau_of(f, scale)) for f in factors]


def training_summary(exp_dir: Path) -> Dict[str, Any]:
    """Epochs, averaged epochs, best validation loss (and accuracy, when logged) and training seconds of a model."""
    hist = load_yaml(exp_dir / "history.yaml")
    epochs = hist["history"]
    best = min(epochs, key=lambda h: h["valid_loss"])
    summary = {"epochs": len(epochs), "averaged_epochs": hist["averaged_epochs"],
               "best_valid_loss": round(best["valid_loss"], 3)}
    if "valid_acc" in best:
        summary["best_valid_acc"] = round(best["valid_acc"], 4)
    if all("seconds" in h for h in epochs):
        summary["train_seconds"] = round(sum(h["seconds"] for h in epochs), 1)
    return summary
