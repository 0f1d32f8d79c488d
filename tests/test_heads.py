"""Heads: hard, soft (dense, top-k) and continuous over one or several token streams (SSL layers, dMel channels);
τ → 0 is hard; folder names from head settings; the CLI options from the registry."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from softtok.tokenizers.dmel import learn_dmel
from softtok.tokenizers.heads import (HEADS, TokenInput, add_head_args, build_head, head_conf_of, head_tag,
                                      input_sizes, run_dir_name)
from softtok.tokenizers.kmeans import Codebook, CodebookMismatch
from softtok.tokenizers.streams import StreamCodebooks, stream_centroids
from test_kmeans import blob_codebook, blobs


@pytest.fixture(scope="module")
def codebook():
    return blob_codebook()


def random_codebook(k: int, dim: int, seed: int) -> Codebook:
    return Codebook(np.random.default_rng(seed).normal(size=(k, dim)).astype(np.float32))


# ---------------------------------------------------------------- one stream


def test_hard_ids_are_nearest_centroids(codebook):
    x = torch.from_numpy(blobs(n_per=20, k=16, dim=12)[0])
    ids = build_head("hard", codebook)(x).ids
    brute = torch.cdist(x.double(), torch.from_numpy(codebook.centroids).double()).argmin(1)
    assert ids.shape == (len(x), 1) and torch.equal(ids[:, 0], brute)


@pytest.mark.parametrize("tau", [1e-6, 1e-20, 1e-38])
def test_soft_at_tiny_tau_reproduces_hard_exactly(codebook, tau):
    x = torch.from_numpy(blobs(n_per=30, k=16, dim=12, seed=3)[0])
    hard = build_head("hard", codebook)(x).ids
    dense = build_head("soft", codebook, tau=tau)(x).probs
    assert dense.shape == (len(x), 1, 16)
    assert torch.equal(dense.argmax(2), hard) and torch.equal(dense.max(2).values, torch.ones(len(x), 1))
    top = build_head("soft", codebook, tau=tau, top_k=4)(x)
    assert torch.equal(top.ids[..., 0], hard) and torch.equal(top.weights[..., 0], torch.ones(len(x), 1))


@pytest.mark.parametrize("tau", [1e-30, 1e-3, 1.0, 1e3, 1e30])
def test_soft_is_finite_and_normalised_at_any_tau(codebook, tau):
    x = torch.from_numpy(blobs(n_per=10, k=16, dim=12, seed=4)[0]) * 100  # large distances
    dense = build_head("soft", codebook, tau=tau)(x).probs
    assert torch.isfinite(dense).all() and torch.allclose(dense.sum(2), torch.ones(len(x), 1))
    top = build_head("soft", codebook, tau=tau, top_k=5)(x)
    assert torch.isfinite(top.weights).all() and torch.allclose(top.weights.sum(2), torch.ones(len(x), 1))


def test_soft_matches_formula_and_topk_renormalises(codebook):
    x = torch.from_numpy(blobs(n_per=5, k=16, dim=12, seed=5)[0])
    tau = 50.0
    d2 = torch.cdist(x.double(), torch.from_numpy(codebook.centroids).double()) ** 2
    expected = torch.softmax(-d2 / tau, dim=1)
    dense = build_head("soft", codebook, tau=tau)(x).probs[:, 0]
    assert torch.allclose(dense.double(), expected, atol=1e-5)
    top = build_head("soft", codebook, tau=tau, top_k=3)(x).single_stream()
    kept = expected.gather(1, top["ids"])
    assert torch.allclose(top["weights"].double(), kept / kept.sum(1, keepdim=True), atol=1e-5)
    assert torch.equal(top["ids"], expected.topk(3, dim=1).indices)


def test_faiss_topk_equals_torch_topk(codebook):
    x = torch.from_numpy(blobs(n_per=10, k=16, dim=12, seed=6)[0])
    a = build_head("soft", codebook, tau=20.0, top_k=6, use_faiss=True)(x)
    b = build_head("soft", codebook, tau=20.0, top_k=6, use_faiss=False)(x)
    assert torch.equal(a.ids, b.ids) and torch.allclose(a.weights, b.weights, atol=1e-5)


def test_continuous_passes_features_and_checks_dim(codebook):
    x = torch.randn(7, 12)
    assert torch.equal(build_head("continuous", codebook)(x).feats, x)
    assert torch.equal(build_head("continuous")(x).feats, x)
    with pytest.raises(CodebookMismatch):
        build_head("continuous", codebook)(torch.randn(7, 3))


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf"), None, "2"])
def test_bad_tau(codebook, tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0|needs --tau"):
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
    with pytest.raises(ValueError, match=r"head 'hard': bad options \['tau'\]"):
        build_head("hard", codebook, tau=1.0)


def test_settings_tags_and_folder_names(codebook):
    assert build_head("soft", codebook, tau=8, top_k=8).settings() == "soft_tau8_topk8"
    assert build_head("soft", codebook, tau=0.005).settings() == "soft_tau0.005"
    assert build_head("hard", codebook).settings() == "hard" == head_tag("hard")
    assert head_tag("soft", [2.5, 1e20], 4) == "soft_tau2.5-1e20_topk4"  # no '+' in folder names
    assert run_dir_name("decode", "soft", 2.9, search="greedy") == "decode_soft_tau2.9_greedy"
    assert run_dir_name("synth", "hard") == "synth_hard"
    assert run_dir_name("decode", "soft", [0.5, 2.0], 4, "beam") == "decode_soft_tau0.5-2_topk4_beam"


def test_single_stream_view_and_kind_check(codebook):
    x = torch.randn(5, 12)
    assert build_head("hard", codebook)(x).single_stream()["ids"].shape == (5,)
    assert build_head("soft", codebook, tau=1.0)(x).single_stream()["probs"].shape == (5, 16)
    two = build_head("hard", [codebook, codebook])(torch.randn(5, 24))
    with pytest.raises(ValueError, match="2 token streams where one is expected"):
        two.single_stream()
    with pytest.raises(ValueError, match="unknown TokenInput kind 'onehot'"):
        TokenInput("onehot")


def test_head_cli_options_come_from_the_registry():
    p = argparse.ArgumentParser()
    add_head_args(p)
    choices = next(a.choices for a in p._actions if a.dest == "head")
    assert sorted(choices) == sorted(HEADS)
    args = p.parse_args(["--head", "soft", "--tau", "2", "--head-conf", "{top_k: 8, tau: 1}"])
    assert head_conf_of(args) == {"top_k": 8, "tau": 2.0}
    with pytest.raises(SystemExit):
        p.parse_args(["--head", "softest"])


# ---------------------------------------------------------------- several streams


def test_multi_source_head_splits_columns_and_tau_to_zero_is_hard():
    cbs = [random_codebook(16, 6, 0), random_codebook(8, 4, 1)]
    x = torch.randn(50, 10)
    hard = build_head("hard", cbs)(x)
    assert hard.ids.shape == (50, 2)
    assert torch.equal(hard.ids[:, 0], cbs[0].assign(x[:, :6])) and torch.equal(hard.ids[:, 1], cbs[1].assign(x[:, 6:]))
    soft = build_head("soft", cbs, tau=[1e-9, 1e-9])(x)
    assert soft.probs.shape == (50, 2, 16)  # the K=8 stream padded with zeros
    assert torch.equal(soft.probs.argmax(2), hard.ids) and torch.allclose(soft.probs.max(2).values, torch.ones(50, 2))
    warm = build_head("soft", cbs, tau=[2.0, 0.5])
    expected = build_head("soft", cbs[1], tau=0.5)(x[:, 6:]).probs[:, 0]
    probs = warm(x).probs
    assert torch.allclose(probs[:, 1, :8], expected) and torch.equal(probs[:, 1, 8:], torch.zeros(50, 8))
    assert warm.settings() == "soft_tau2-0.5"
    top = build_head("soft", cbs, tau=1.0, top_k=3)
    assert top.settings() == "soft_tau1-1_topk3" and top(x).ids.shape == (50, 2, 3)
    assert input_sizes(top, [6, 4]) == ([16, 8], None) and input_sizes(build_head("hard", cbs[0]), [6]) == (16, None)
    assert input_sizes(build_head("continuous", None, [6, 4]), [6, 4]) == (None, [6, 4])


def test_multi_source_bad_inputs_are_one_line_errors():
    cbs = [random_codebook(16, 6, 0), random_codebook(8, 4, 1)]
    with pytest.raises(ValueError, match=r"^tau: 3 values for 2 feature streams$"):
        build_head("soft", cbs, [6, 4], tau=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^2 codebooks \(--kmeans\) for 3 feature streams \(--feats\)$"):
        build_head("hard", cbs, [6, 4, 2])
    with pytest.raises(ValueError, match="stream 2: codebook .* has dim 4, features 5"):
        build_head("hard", cbs, [6, 5])
    with pytest.raises(ValueError, match=r"expected \(T, 10\)"):
        build_head("hard", cbs, [6, 4])(torch.zeros(3, 9))
    with pytest.raises(ValueError, match=r"expected \(T, 10\)"):
        build_head("continuous", None, [6, 4])(torch.zeros(3, 9))
    with pytest.raises(ValueError, match="needs a k-means codebook"):
        build_head("soft", None, [6, 4], tau=1.0)
    with pytest.raises(ValueError, match=r"top_k=9 must be in \[1, K=8\]"):
        build_head("soft", cbs, tau=1.0, top_k=9)


def test_dmel_channels_are_streams_through_the_same_softmax():
    x = np.array([[0.0, 3.0], [1.0, 2.0], [3.0, 0.5]], dtype=np.float32)
    cb = learn_dmel(x, 4, feature_spec={"feature": "fbank", "dim": 2})
    head = build_head("hard", cb)
    assert head.codebooks.n_streams == 2 and head(torch.zeros(3, 2)).ids.shape == (3, 2)
    frames = torch.tensor([[0.4, 2.6], [2.9, 1.4]])
    assert head(frames).ids.tolist() == [[0, 3], [3, 1]]  # nearest bin per channel
    soft = build_head("soft", cb, tau=0.5)(frames)
    expected = torch.softmax(-(frames[0, 1] - torch.arange(4.0)) ** 2 / 0.5, dim=0)
    assert torch.allclose(soft.probs[0, 1], expected, atol=1e-6)
    cold = build_head("soft", cb, tau=1e-9)(frames)
    assert cold.probs.argmax(2).tolist() == [[0, 3], [3, 1]]


def test_per_channel_streams_equal_one_codebook_per_channel():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, generator=gen) * 3
    cb = learn_dmel(x.numpy(), 16, per_channel_range=True)
    parts = [Codebook(c) for c in stream_centroids(cb)]
    assert len(parts) == 12 and all(p.dim == 1 for p in parts)
    for name, conf in (("hard", {}), ("soft", {"tau": 0.3})):
        fast = build_head(name, cb, **conf)(x)
        slow = [build_head(name, p, **conf)(x[:, c:c + 1]) for c, p in enumerate(parts)]
        for c, s in enumerate(slow):
            assert (torch.equal(fast.ids[:, c], s.ids[:, 0]) if name == "hard"
                    else torch.allclose(fast.probs[:, c], s.probs[:, 0], atol=1e-5))
    top = build_head("soft", cb, tau=0.3, top_k=2)(x)
    assert top.ids.shape == (40, 12, 2)
    assert torch.equal(top.ids[:, 5, 0], build_head("hard", parts[5])(x[:, 5:6]).ids[:, 0])


def test_stream_codebooks_sizes_and_centroids():
    dmel = learn_dmel(np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32), 4)
    streams = StreamCodebooks([random_codebook(8, 5, 0), dmel])
    assert streams.sizes == [8, 4, 4, 4] and streams.n_streams == 4 and streams.source_dims == [5, 3]
    assert [c.shape for c in streams.centroids()] == [(8, 5), (4, 1), (4, 1), (4, 1)]


def test_an_exact_tie_hard_takes_the_lower_index_soft_splits_the_mass():
    """A frame exactly midway between centres 2 and 5: hard says 2; soft gives each half at any τ, so its argmax
    is still 2 (the documented difference from the one-hot at τ → 0)."""
    centres = np.zeros((6, 2), dtype=np.float32)
    centres[:, 0] = 10.0 + np.arange(6) * 10.0
    centres[2], centres[5] = [0.0, 1.0], [0.0, -1.0]
    frame = torch.zeros(1, 2)
    hard = build_head("hard", Codebook(centres))(frame).ids
    assert hard.tolist() == [[2]]
    for tau in (1e-6, 1.0):
        probs = build_head("soft", Codebook(centres), tau=tau)(frame).probs[0, 0]
        assert probs[2] == probs[5] == pytest.approx(0.5) and int(probs.argmax()) == 2
