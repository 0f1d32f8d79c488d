"""softtok.downstream.stats: the one paired bootstrap, and both comparisons built on it giving the numbers the two
separate loops they replaced gave (same RNG draws, same arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from softtok.downstream.scoring import paired_bootstrap
from softtok.downstream.stats import paired_bootstrap_interval
from softtok.downstream.vocoder.metrics import paired_mean_difference


def _table(errors, lengths):
    return {f"u{i:04d}": {"word_errors": int(e), "ref_words": int(n), "sub": int(e), "del": 0, "ins": 0,
                          "char_errors": int(e), "ref_chars": int(n)}
            for i, (e, n) in enumerate(zip(errors, lengths))}


def _interval(deltas, confidence):
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(deltas, [alpha, 100.0 - alpha])
    return float(low), float(high), float(np.mean(deltas < 0))


def _old_rate_bootstrap(errs_a, errs_b, lens, n_resamples, seed, confidence):
    """The resampling of scoring.paired_bootstrap before it shared one loop (a copy, for comparison)."""
    diff = errs_b - errs_a
    idx = np.random.default_rng(seed).integers(0, len(lens), size=(n_resamples, len(lens)))
    tot_len = lens[idx].sum(axis=1)
    return _interval(100.0 * diff[idx].sum(axis=1) / np.maximum(tot_len, 1), confidence)


def _old_mean_bootstrap(a, b, n_resamples, seed, confidence):
    """The resampling of metrics.paired_mean_difference before it shared one loop (a copy, for comparison)."""
    diff = (b - a)[np.isfinite(a) & np.isfinite(b)]
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(n_resamples, diff.size))
    return _interval(diff[idx].mean(axis=1), confidence)


@pytest.mark.parametrize("seed,n_resamples,confidence", [(0, 1000, 0.95), (3, 257, 0.9), (11, 1, 0.5)])
def test_wer_bootstrap_matches_its_old_loop(seed, n_resamples, confidence):
    rng = np.random.default_rng(seed + 100)
    lens = rng.integers(0, 30, 60)
    errs_a, errs_b = rng.integers(0, 6, 60), rng.integers(0, 6, 60)
    r = paired_bootstrap(_table(errs_a, lens), _table(errs_b, lens), n_resamples=n_resamples, seed=seed,
                         confidence=confidence)
    assert (r["ci_low"], r["ci_high"], r["p_better"]) == _old_rate_bootstrap(errs_a, errs_b, lens, n_resamples,
                                                                             seed, confidence)


@pytest.mark.parametrize("seed,n_resamples,confidence", [(0, 1000, 0.95), (3, 257, 0.9), (11, 1, 0.5)])
def test_mean_bootstrap_matches_its_old_loop(seed, n_resamples, confidence):
    rng = np.random.default_rng(seed + 200)
    a, b = rng.normal(size=45), rng.normal(size=45)
    a[[3, 17]], b[30] = np.nan, np.inf
    r = paired_mean_difference(a, b, n_resamples=n_resamples, seed=seed, confidence=confidence)
    assert (r["ci_low"], r["ci_high"], r["p_lower"]) == _old_mean_bootstrap(a, b, n_resamples, seed, confidence)


def test_values_of_the_base_commit():
    # Literals printed at the base commit (e217b4b) by the two old functions on these inputs, with
    # PYTHONPATH=/work/base (a checkout of it); repr() of each float, so equality is bit for bit.
    rng = np.random.default_rng(42)
    lens = rng.integers(1, 25, 30)
    errs_a, errs_b = rng.integers(0, 5, 30), rng.integers(0, 5, 30)
    r = paired_bootstrap(_table(errs_a, lens), _table(errs_b, lens))
    assert (r["delta"], r["ci_low"], r["ci_high"], r["p_better"]) == WER_AT_BASE
    a, b = rng.normal(size=40), rng.normal(size=40)
    m = paired_mean_difference(a, b)
    assert (m["delta"], m["ci_low"], m["ci_high"], m["p_lower"]) == MEAN_AT_BASE


WER_AT_BASE = (0.7334963325183375, -3.88390080320199, 5.321718797483314, 0.324)
MEAN_AT_BASE = (-0.21749829211458502, -0.559244595788261, 0.09364717509209336, 0.909)


def test_interval_of_a_constant_difference_and_bad_count():
    ci = paired_bootstrap_interval(5, lambda idx: np.full(len(idx), -2.0), n_resamples=10)
    assert ci == (-2.0, -2.0, 1.0) and ci.p_below_zero == 1.0
    with pytest.raises(ValueError, match="n_resamples must be positive, got 0"):
        paired_bootstrap_interval(5, lambda idx: idx.mean(axis=1), n_resamples=0)
    with pytest.raises(ValueError, match="n_resamples must be positive"):
        paired_bootstrap(_table([1], [5]), _table([0], [5]), n_resamples=0)
    with pytest.raises(ValueError, match="n_resamples must be positive"):
        paired_mean_difference([1.0], [2.0], n_resamples=0)
