"""The fused soft embedding (one attention call) equals the soft head then TokenEmbedding, builds no (T, K)
matrix, and refuses a τ so small that its logits would overflow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import softtok.downstream.fused as fused
from softtok.downstream.embedding import TokenEmbedding
from softtok.downstream.data import pad_token_inputs
from softtok.downstream.fused import fused_soft_embedding, fuses
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.tau import TAU_SCOPES

DIM = 32  # embedding width d
BENCH = Path(__file__).resolve().parent.parent / "bench" / "fused_embedding.py"


def clustered(k: int, dim: int, frames: int, seed: int = 0):
    """A codebook of k centres with a shared offset (as SSL features have) and frames scattered around them."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=gen) + torch.randn(dim, generator=gen)
    picks = torch.randint(k, (frames,), generator=gen)
    feats = centres[picks] + 0.5 * torch.randn(frames, dim, generator=gen)
    return Codebook(centres.numpy()), feats


def tau_scale(codebook: Codebook, feats: torch.Tensor) -> float:
    """The median nearest squared distance: the unit τ is given in."""
    return float(codebook.distances(feats).min(dim=1).values.median())


def two_step(codebook: Codebook, emb: TokenEmbedding, feats: torch.Tensor, tau: float) -> torch.Tensor:
    """The soft head's probabilities (T, 1, K), then TokenEmbedding; (B, T, D) goes utterance by utterance."""
    head = build_head("soft", codebook, tau=tau)
    if feats.ndim == 2:
        return emb(head(feats))
    probs = torch.stack([head(x).probs for x in feats])
    return emb(TokenInput("probs", probs=probs))


def embedding(k: int) -> TokenEmbedding:
    torch.manual_seed(1)
    return TokenEmbedding(k, DIM)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("factor", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("k", [16, 1024])
def test_equals_the_two_step_path(k, factor, batched):
    codebook, feats = clustered(k, 384, 600)
    tau = factor * tau_scale(codebook, feats)
    if batched:
        feats = feats.reshape(3, 200, 384)
    emb = embedding(k)
    got = emb.soft_from_features(feats, codebook, tau)
    want = two_step(codebook, emb, feats, tau)
    assert got.shape == want.shape == (*feats.shape[:-1], DIM)
    assert (got - want).abs().max() <= 1e-5


def test_padded_frames_embed_as_the_pad_row_as_padded_soft_input_does():
    """Decoding pads features with zeros; the fused batch must embed those frames as E[pad_id], as the two-step
    path's padded probabilities (the one-hot of pad_id) do, and leave the real frames as they were."""
    codebook, feats = clustered(64, 48, 90)
    tau = tau_scale(codebook, feats)
    parts = [feats[:90], feats[:40], feats[:7]]
    head, emb = build_head("soft", codebook, tau=tau), embedding(64)
    padded_feats, lengths = pad_token_inputs([TokenInput("feats", feats=x) for x in parts])
    for pad_id in (0, 5):
        tokens, _ = pad_token_inputs([head(x) for x in parts], pad_id)
        got = emb.soft_from_features(padded_feats.feats, codebook, tau, lengths, pad_id)
        assert (got - emb(tokens)).abs().max() <= 1e-5
        assert torch.equal(got[2, 7:], emb.tables[0].weight[pad_id].expand(83, DIM))


def test_where_decoding_fuses():
    """Auto: a dense soft head over one stream on CPU (where it measured faster), its τ fixed or measured on the set;
    never top-k, hard, several streams or a τ per utterance; forcing it on a head that cannot fuse is a one-line
    error."""
    codebook, _ = clustered(32, 8, 10)
    soft, topk = build_head("soft", codebook, tau=1.0), build_head("soft", codebook, tau=1.0, top_k=4)
    two = build_head("soft", [codebook, codebook], tau=1.0)
    per_set, per_utt = (build_head("soft", codebook, tau="auto", tau_factor=0.1, tau_scope=s) for s in TAU_SCOPES)
    assert fuses(soft, "cpu") and not fuses(soft, "cuda") and fuses(soft, "cuda", True)
    assert not fuses(soft, "cpu", False) and fuses(per_set, "cpu")
    cannot = (topk, two, build_head("hard", codebook), per_utt)
    assert not any(fuses(h, "cpu") for h in cannot)
    for head in cannot:
        with pytest.raises(ValueError, match="fused soft embedding takes a dense soft head with one τ over one token"):
            fuses(head, "cpu", True)


def test_the_comparison_covers_soft_mixtures():
    """At 1× the scale the probabilities are far from one-hot, so the equality above tests the softmax."""
    codebook, feats = clustered(1024, 384, 600)
    probs = build_head("soft", codebook, tau=tau_scale(codebook, feats))(feats).probs
    assert float((probs.max(dim=-1).values < 0.9).float().mean()) > 0.2


def test_function_with_an_array_and_a_wider_table():
    """Centroids as an array; a table wider than the features (the zero padding goes on q and k)."""
    codebook, feats = clustered(64, 16, 100)
    table = torch.randn(64, 48)
    tau = tau_scale(codebook, feats)
    probs = build_head("soft", codebook, tau=tau)(feats).probs[:, 0]
    got = fused_soft_embedding(feats, np.asarray(codebook.centroids), tau, table)
    assert got.shape == (100, 48) and (got - probs @ table).abs().max() <= 1e-5


def test_never_builds_the_frames_by_centroids_matrix():
    """No single allocation of the fused call comes near the (T, K) float32 matrix the two-step path holds."""
    codebook, feats = clustered(4096, 64, 2000)
    emb = embedding(4096)
    matrix_bytes, tau = 2000 * 4096 * 4, tau_scale(codebook, feats)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        emb.soft_from_features(feats, codebook, tau)
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert 0 < largest < matrix_bytes / 10


def tiny_tau(codebook: Codebook, feats: torch.Tensor, margin: float) -> float:
    """A τ whose logit bound (from the centroids' mean, where the fused path computes) is ``margin`` × its limit."""
    mean, _, c_sqnorm = codebook.centred()
    return fused.logit_bound(feats - mean, c_sqnorm, 1.0) / (margin * fused.MAX_LOGIT)


def test_tiny_tau_matches_up_to_the_limit_and_is_refused_beyond():
    """Down to the limit the fused path matches (both are the hard one-hot); below it, one clear error."""
    codebook, feats = clustered(1024, 384, 300)
    emb = embedding(1024)
    tau = tiny_tau(codebook, feats, 0.99)
    hard = emb.tables[0].weight[codebook.assign(feats)]
    assert torch.equal(emb.soft_from_features(feats, codebook, tau), two_step(codebook, emb, feats, tau))
    assert torch.equal(two_step(codebook, emb, feats, tau), hard)
    with pytest.raises(ValueError, match=r"^fused soft embedding: tau=\S+ too small, logits up to .* overflow "
                                         r"float32 .*use the soft head and TokenEmbedding instead$"):
        emb.soft_from_features(feats, codebook, tiny_tau(codebook, feats, 1.01))


def test_without_the_limit_a_tiny_tau_goes_wrong(monkeypatch):
    """Why the refusal: unchecked, overflowing logits give NaN or the wrong rows, while the two-step path holds."""
    codebook, feats = clustered(1024, 384, 300)
    emb = embedding(1024)
    tau = tiny_tau(codebook, feats, 1e4)
    monkeypatch.setattr(fused, "MAX_LOGIT", float("inf"))
    got, want = emb.soft_from_features(feats, codebook, tau), two_step(codebook, emb, feats, tau)
    assert not torch.allclose(got, want, atol=1e-5)


def test_bad_input_is_one_line():
    codebook, feats = clustered(16, 8, 10)
    emb = embedding(16)
    with pytest.raises(ValueError, match="features of dim 4, codebook dim 8"):
        emb.soft_from_features(feats[:, :4], codebook, 1.0)
    with pytest.raises(ValueError, match="16 centroids for a table of K=32"):
        embedding(32).soft_from_features(feats, codebook, 1.0)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        emb.soft_from_features(feats, codebook, 0.0)
    with pytest.raises(ValueError, match="needs a discrete TokenEmbedding of one stream, this one is discrete "
                                         "with 2 streams"):
        TokenEmbedding([16, 16], DIM).soft_from_features(feats, codebook, 1.0)
    with pytest.raises(ValueError, match="this one is continuous"):
        TokenEmbedding(None, DIM, feat_dim=8).soft_from_features(feats, codebook, 1.0)
    dmel = Codebook(np.random.rand(16, 8).astype(np.float32), {"per_channel": True})
    with pytest.raises(ValueError, match="per-channel codebook of 8 channels is 8 streams; it takes one"):
        emb.soft_from_features(feats, dmel, 1.0)


def test_bench_writes_its_report(tmp_path):
    """bench/fused_embedding.py at toy sizes: one case per path, the JSON and the markdown with a conclusion."""
    spec = importlib.util.spec_from_file_location("fused_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--ks", "32", "--dims", "8", "--threads", "1", "--frames", "50", "--table-dim", "4", "--repeats", "1",
                "--retries", "0", "--out-dir", str(tmp_path)])
    result = json.loads((tmp_path / "fused_embedding.json").read_text())
    assert [c["path"] for c in result["cases"]] == ["two_step", "fused"]
    assert result["cases"][1]["max_abs_diff_vs_two_step"] <= 1e-5
    text = (tmp_path / "FUSED_EMBEDDING.md").read_text()
    assert "| 32 | 8 | 1 |" in text and "## Conclusion" in text and "rerun up to 0 times" in text


def test_exact_under_a_large_common_offset():
    """SSL-large feature norms (‖x‖² = 1e8 from a shared offset): both paths match the float64 soft embedding."""
    codebook, feats = clustered(256, 1024, 300)
    offset = torch.randn(1024, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    offset *= 1e4 / offset.norm()
    centres = torch.from_numpy(codebook.centroids).double() + offset
    x = (feats.double() + offset)
    far = Codebook(centres.float().numpy())
    x32 = x.float()
    d2 = ((x32.double()[:, None, :] - centres.float().double()[None]) ** 2).sum(-1)
    tau = float(d2.min(1).values.median())
    emb = embedding(256)
    want = torch.softmax(-d2 / tau, dim=1) @ emb.tables[0].weight.double()
    for got in (emb.soft_from_features(x32, far, tau), two_step(far, emb, x32, tau)):
        assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max()
