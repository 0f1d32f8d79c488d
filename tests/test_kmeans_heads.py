"""k-means backends and codebook files; hard, soft (dense, top-k) and continuous heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softtok.tokenizers.heads import SoftHead, build_head
from softtok.tokenizers.kmeans import Codebook, CodebookMismatch, inertia, learn_kmeans


def blobs(n_per: int = 200, k: int = 4, dim: int = 8, seed: int = 0):
    """Well separated Gaussian clusters and their true centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, dim)).astype(np.float32)
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    return x, centres


@pytest.fixture(scope="module")
def codebook():
    x, _ = blobs(k=16, dim=12)
    return learn_kmeans(x, 16, backend="faiss", seed=0, feature_spec={"feature": "mfcc", "dim": 12})


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_backends_find_separated_clusters(backend):
    x, centres = blobs()
    options = {"n_init": 3} if backend == "sklearn" else {}
    cb = learn_kmeans(x, 4, backend=backend, seed=1, **options)
    nearest = np.linalg.norm(cb.centroids[:, None] - centres[None], axis=2).min(axis=0)
    assert nearest.max() < 0.5  # every true centre recovered
    assert cb.meta["inertia"] == pytest.approx(inertia(x, cb.centroids))
    assert cb.meta["inertia"] < 1.2 * len(x) * x.shape[1]  # ≈ unit variance per dim


def test_kmeans_input_errors():
    x, _ = blobs()
    with pytest.raises(ValueError, match="unknown k-means backend 'kmeans'"):
        learn_kmeans(x, 4, backend="kmeans")
    with pytest.raises(ValueError, match="need at least K=1000"):
        learn_kmeans(x, 1000)


def test_codebook_roundtrip_and_mismatch(tmp_path, codebook):
    path = tmp_path / "km.npy"
    codebook.save(path)
    loaded = Codebook.load(path)
    assert np.array_equal(loaded.centroids, codebook.centroids) and loaded.meta["backend"] == "faiss"
    with pytest.raises(CodebookMismatch, match="feature='fbank'"):
        loaded.check_spec({"feature": "fbank", "dim": 12}, "feats.yaml")
    with pytest.raises(CodebookMismatch, match="does not match codebook dim 12"):
        loaded.assign(torch.zeros(3, 13))
    np.save(tmp_path / "bad.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="bad.npy: expected finite centroids"):
        Codebook.load(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        Codebook.load(tmp_path / "nope.npy")


def test_hard_ids_are_nearest_centroids(codebook):
    x = torch.from_numpy(blobs(n_per=20, k=16, dim=12)[0])
    ids = build_head("hard", codebook)(x).ids
    brute = torch.cdist(x.double(), torch.from_numpy(codebook.centroids).double()).argmin(1)
    assert torch.equal(ids, brute)


@pytest.mark.parametrize("tau", [1e-6, 1e-20, 1e-38])
def test_soft_at_tiny_tau_reproduces_hard_exactly(codebook, tau):
    x = torch.from_numpy(blobs(n_per=30, k=16, dim=12, seed=3)[0])
    hard = build_head("hard", codebook)(x).ids
    dense = build_head("soft", codebook, tau=tau)(x).probs
    assert torch.equal(dense.argmax(1), hard) and torch.equal(dense.max(1).values, torch.ones(len(x)))
    top = build_head("soft", codebook, tau=tau, top_k=4)(x)
    assert torch.equal(top.ids[:, 0], hard) and torch.equal(top.weights[:, 0], torch.ones(len(x)))


@pytest.mark.parametrize("tau", [1e-30, 1e-3, 1.0, 1e3, 1e30])
def test_soft_is_finite_and_normalised_at_any_tau(codebook, tau):
    x = torch.from_numpy(blobs(n_per=10, k=16, dim=12, seed=4)[0]) * 100  # large distances
    dense = build_head("soft", codebook, tau=tau)(x).probs
    assert torch.isfinite(dense).all() and torch.allclose(dense.sum(1), torch.ones(len(x)))
    top = build_head("soft", codebook, tau=tau, top_k=5)(x)
    assert torch.isfinite(top.weights).all() and torch.allclose(top.weights.sum(1), torch.ones(len(x)))


def test_soft_matches_formula_and_topk_renormalises(codebook):
    x = torch.from_numpy(blobs(n_per=5, k=16, dim=12, seed=5)[0])
    tau = 50.0
    d2 = torch.cdist(x.double(), torch.from_numpy(codebook.centroids).double()) ** 2
    expected = torch.softmax(-d2 / tau, dim=1)
    dense = build_head("soft", codebook, tau=tau)(x).probs
    assert torch.allclose(dense.double(), expected, atol=1e-5)
    top = build_head("soft", codebook, tau=tau, top_k=3)(x)
    kept = expected.gather(1, top.ids)
    assert torch.allclose(top.weights.double(), kept / kept.sum(1, keepdim=True), atol=1e-5)
    assert torch.equal(top.ids, expected.topk(3, dim=1).indices)


def test_faiss_topk_equals_torch_topk(codebook):
    x = torch.from_numpy(blobs(n_per=10, k=16, dim=12, seed=6)[0])
    a = SoftHead(codebook, tau=20.0, top_k=6, use_faiss=True)(x)
    b = SoftHead(codebook, tau=20.0, top_k=6, use_faiss=False)(x)
    assert torch.equal(a.ids, b.ids) and torch.allclose(a.weights, b.weights, atol=1e-5)


def test_continuous_passes_features_and_checks_dim(codebook):
    x = torch.randn(7, 12)
    assert torch.equal(build_head("continuous", codebook)(x).feats, x)
    assert torch.equal(build_head("continuous")(x).feats, x)
    with pytest.raises(CodebookMismatch):
        build_head("continuous", codebook)(torch.randn(7, 3))


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau(codebook, tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        build_head("soft", codebook, tau=tau)


def test_bad_head_options(codebook):
    with pytest.raises(ValueError, match=r"top_k=17 must be in \[1, K=16\]"):
        build_head("soft", codebook, tau=1.0, top_k=17)
    with pytest.raises(ValueError, match="needs --tau"):
        build_head("soft", codebook)
    with pytest.raises(ValueError, match="unknown head 'softest'"):
        build_head("softest", codebook)
    with pytest.raises(ValueError, match="needs a k-means codebook"):
        build_head("hard")


def test_settings_tags(codebook):
    assert build_head("soft", codebook, tau=8, top_k=8).settings() == "soft_tau8_topk8"
    assert build_head("soft", codebook, tau=0.005).settings() == "soft_tau0.005"
    assert build_head("hard", codebook).settings() == "hard"
