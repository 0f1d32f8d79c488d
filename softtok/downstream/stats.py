"""The one paired bootstrap over utterances, behind both the WER comparison of two ASR systems
(:func:`softtok.downstream.scoring.paired_bootstrap`) and the per-utterance metric comparison of two
vocoders (:func:`softtok.downstream.vocoder.metrics.paired_mean_difference`)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class BootstrapInterval(NamedTuple):
    """Percentile interval of a resampled difference and the fraction of resamples below zero."""

    low: float
    high: float
    p_below_zero: float


def paired_bootstrap_interval(n_items: int, statistic: Callable[[np.ndarray], np.ndarray], n_resamples: int = 1000,
                              seed: int = 0, confidence: float = 0.95) -> BootstrapInterval:
    """Resample ``n_items`` paired items with replacement ``n_resamples`` times and take ``statistic`` of each.

    ``statistic`` maps the (n_resamples, n_items) index array to one difference per resample (B − A).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    idx = np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))
    deltas = statistic(idx)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(deltas, [alpha, 100.0 - alpha])
    return BootstrapInterval(float(low), float(high), float(np.mean(deltas < 0)))
