"""k-means backends and codebook files (the heads over them: test_heads.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softtok.tokenizers.kmeans import Codebook, CodebookMismatch, inertia, kmeans_plusplus_torch, learn_kmeans


def blobs(n_per: int = 200, k: int = 4, dim: int = 8, seed: int = 0):
    """Well separated Gaussian clusters and their true centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, dim)).astype(np.float32)
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    return x, centres


@pytest.fixture(scope="module")
def codebook():
    return blob_codebook()


def blob_codebook() -> Codebook:
    """K=16 faiss centroids of 12-dim blobs (shared with test_heads.py)."""
    x, _ = blobs(k=16, dim=12)
    return learn_kmeans(x, 16, backend="faiss", seed=0, feature_spec={"feature": "mfcc", "dim": 12})


@pytest.mark.parametrize("backend", ["faiss", "sklearn", "torch"])
def test_backends_find_separated_clusters(backend):
    x, centres = blobs()
    options = {"n_init": 3} if backend == "sklearn" else {"device": "cpu"} if backend == "torch" else {}
    cb = learn_kmeans(x, 4, backend=backend, seed=1, **options)
    nearest = np.linalg.norm(cb.centroids[:, None] - centres[None], axis=2).min(axis=0)
    assert nearest.max() < 0.5  # every true centre recovered
    assert cb.meta["inertia"] == pytest.approx(inertia(x, cb.centroids))
    assert cb.meta["inertia"] < 1.2 * len(x) * x.shape[1]  # ≈ unit variance per dim


def test_torch_kmeans_plusplus_spreads_seeds_and_survives_duplicates():
    x, centres = blobs(n_per=50, k=8, dim=6)
    seeds = kmeans_plusplus_torch(torch.from_numpy(x), 8, seed=0).numpy()
    assert len({int(np.linalg.norm(centres - s, axis=1).argmin()) for s in seeds}) == 8  # one seed per cluster
    same = torch.ones(30, 4)  # fewer distinct frames than K: seeds repeat, nothing divides by zero
    assert torch.equal(kmeans_plusplus_torch(same, 5), torch.ones(5, 4))
    cb = learn_kmeans(np.repeat(x[:3], 4, axis=0), 5, backend="torch", device="cpu", niter=3)
    assert np.isfinite(cb.centroids).all()  # empty clusters keep their centroid


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


def offset_frames(sq_norm: float, k: int = 256, dim: int = 1024, frames: int = 400, seed: int = 0):
    """SSL-large-like features: a common offset of squared norm ``sq_norm`` plus unit-scale structure, and a
    codebook of k centres around it (frames near their centre, d² ≪ ‖x‖²)."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=dim)
    offset *= np.sqrt(sq_norm) / np.linalg.norm(offset)
    centres = offset + rng.normal(size=(k, dim))
    x = centres[rng.integers(k, size=frames)] + 0.3 * rng.normal(size=(frames, dim))
    return x.astype(np.float32), Codebook(centres.astype(np.float32))


def exact_sqdist(x: np.ndarray, codebook: Codebook) -> np.ndarray:
    """‖x − c‖² in float64 from the float32 values (the reference)."""
    x64, c64 = x.astype(np.float64), codebook.centroids.astype(np.float64)
    return ((x64[:, None, :] - c64[None]) ** 2).sum(-1)


@pytest.mark.parametrize("sq_norm", [3e5, 3.5e7, 1e8])
def test_distances_stay_exact_for_large_feature_norms(sq_norm):
    """Relative error ≤ 1e-4 up to ‖x‖² = 1e8 (distances are taken from the centroids' mean), for the dense
    distances, the hard ids, the faiss top-k and the inertia; the plain matmul form fails this at 1e8."""
    from softtok.tokenizers.kmeans import squared_distances
    from softtok.tokenizers.streams import StreamCodebooks

    x, codebook = offset_frames(sq_norm)
    want = exact_sqdist(x, codebook)
    got = codebook.distances(torch.from_numpy(x)).double().numpy()
    assert np.abs(got - want).max() / want.min() <= 1e-4
    assert np.array_equal(codebook.assign(torch.from_numpy(x)).numpy(), want.argmin(1))
    ids, d2 = StreamCodebooks([codebook]).nearest(torch.from_numpy(x), 4, use_faiss=True)[0]
    nearest4 = np.sort(want, axis=1)[:, :4]
    assert np.abs(d2[:, 0].double().numpy() - nearest4).max() / nearest4.min() <= 1e-4
    assert inertia(x, codebook.centroids) == pytest.approx(want.min(1).sum(), rel=1e-4)
    if sq_norm == 1e8:
        c = torch.from_numpy(codebook.centroids)
        plain = squared_distances(torch.from_numpy(x), c).double().numpy()
        assert np.abs(plain - want).max() / want.min() > 1e-4  # what centring fixes
