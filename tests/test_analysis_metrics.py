"""Analysis metrics on hand-computed cases: scatter-trace separability, purity/PNMI, RankMe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from softtok.analysis.metrics import (Contingency, GramStats, ScatterStats, purity_pnmi, rankme,
                                      rankme_from_singular_values, separability)


def test_separability_hand_case():
    # class 0 = {0, 2}, class 1 = {4, 6}: mean 3, class means 1 and 5.
    # tr S_b = 2·(1−3)² + 2·(5−3)² = 16; tr S_w = 4 × 1² = 4  -> per frame 4 and 1, ratio 4.
    x = np.array([[0.0], [2.0], [4.0], [6.0]])
    res = separability(x, [0, 0, 1, 1], n_classes=2)
    assert res["between"] == pytest.approx(4.0) and res["within"] == pytest.approx(1.0)
    assert res["ratio"] == pytest.approx(4.0) and res["total"] == pytest.approx(5.0)
    assert res["frames"] == 4 and res["classes"] == 2


def test_separability_streaming_shift_and_scale_invariance():
    g = np.random.default_rng(0)
    x, y = g.normal(size=(300, 5)), g.integers(0, 4, size=300)
    x[y == 2] += 3.0
    whole = separability(x, y, 6)
    stats = ScatterStats(6)
    for a, b in ((0, 17), (17, 200), (200, 300)):
        stats.update(x[a:b], y[a:b])
    parts = stats.result()
    assert parts["ratio"] == pytest.approx(whole["ratio"], rel=1e-10) and parts["classes"] == 4
    moved = separability(1e6 + 7.0 * x, y, 6)  # translation and isotropic scaling leave the ratio unchanged
    assert moved["ratio"] == pytest.approx(whole["ratio"], rel=1e-6)
    # a brute-force check against the scatter matrices
    mu = x.mean(0)
    sb = sum((y == c).sum() * np.sum((x[y == c].mean(0) - mu) ** 2) for c in np.unique(y))
    sw = sum(np.sum((x[y == c] - x[y == c].mean(0)) ** 2) for c in np.unique(y))
    assert whole["ratio"] == pytest.approx(sb / sw, rel=1e-10)


def test_separability_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels outside"):
        separability(np.zeros((2, 3)), [0, 5], n_classes=2)
    with pytest.raises(ValueError, match="no frames"):
        ScatterStats(2).result()


def test_purity_pnmi_two_by_two_by_hand():
    # p = [[.375, .125], [.125, .375]]; H(y) = ln 2;
    # I = .75 ln(.375/.25) + .25 ln(.125/.25) = 0.130812  -> PNMI 0.188722
    res = purity_pnmi(np.array([[3, 1], [1, 3]]))
    assert res["phone_purity"] == pytest.approx(0.75) and res["cluster_purity"] == pytest.approx(0.75)
    assert res["phone_entropy"] == pytest.approx(math.log(2))
    assert res["mutual_info"] == pytest.approx(0.130812, abs=1e-6)
    assert res["pnmi"] == pytest.approx(0.188722, abs=1e-6)


def test_purity_pnmi_pure_clusters_split_phone():
    # phone 0 is split over clusters 0 and 1, phone 1 is cluster 2: every cluster is pure (phone purity 1),
    # phone 0's best cluster holds half of it (cluster purity .25 + .5); the cluster tells the phone: PNMI 1.
    res = purity_pnmi(np.array([[2, 2, 0], [0, 0, 4]]))
    assert res["phone_purity"] == pytest.approx(1.0) and res["cluster_purity"] == pytest.approx(0.75)
    assert res["pnmi"] == pytest.approx(1.0) and res["tokens_used"] == 3
    assert purity_pnmi(np.array([[1, 1], [1, 1]]))["pnmi"] == pytest.approx(0.0)


def test_contingency_hard_and_soft():
    hard = Contingency(2, 3)
    hard.update([0, 0, 1, 1, 1], ids=torch.tensor([0, 1, 2, 2, 0]))
    assert hard.counts.tolist() == [[1, 1, 0], [1, 0, 2]]
    soft = Contingency(2, 2)
    soft.update([0, 1], probs=torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    # p = [[.25, .25], [0, .5]]: purities .75; I = .25 ln 2 + .25 ln(2/3) + .5 ln(4/3) = 0.215762
    res = purity_pnmi(soft.counts)
    assert res["phone_purity"] == pytest.approx(0.75) and res["cluster_purity"] == pytest.approx(0.75)
    assert res["pnmi"] == pytest.approx(0.215762 / math.log(2), abs=1e-6)
    onehot = Contingency(2, 3)
    onehot.update([0, 0, 1, 1, 1], probs=torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2, 0]), 3).float())
    assert torch.equal(onehot.counts, hard.counts)
    with pytest.raises(ValueError, match="exactly one"):
        soft.update([0], ids=torch.tensor([0]), probs=torch.tensor([[1.0, 0.0]]))


def test_rankme_known_singular_values():
    # σ = (3, 1): p = (.75, .25), H = 0.562335, RankMe = 1.754765
    assert rankme(np.diag([3.0, 1.0])) == pytest.approx(1.754765, abs=1e-5)
    # σ = (4, 2, 2, 0) in random orthogonal bases: p = (.5, .25, .25, 0), RankMe = 2^1.5
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(50, 4, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    x = u @ torch.diag(torch.tensor([4.0, 2.0, 2.0, 0.0], dtype=torch.float64)) @ v.T
    assert rankme(x) == pytest.approx(2 ** 1.5, abs=1e-4)
    gram = GramStats()
    gram.update(x[:20])
    gram.update(x[20:])
    assert gram.rankme() == pytest.approx(2 ** 1.5, abs=1e-4) and gram.frames == 50
    assert rankme_from_singular_values(torch.ones(7)) == pytest.approx(7.0, abs=1e-4)
    assert rankme(np.zeros((3, 3))) == 0.0
