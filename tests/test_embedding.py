"""TokenEmbedding: hard ids == dense one-hot == top-1; soft mixtures; several streams summed; batching; bad inputs;
checkpoints of the earlier layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softtok.downstream.data import pad_token_inputs
from softtok.downstream.embedding import TokenEmbedding
from softtok.tokenizers.heads import TokenInput


@pytest.fixture
def emb():
    torch.manual_seed(0)
    return TokenEmbedding(16, 8)


def ids_input(ids: torch.Tensor) -> TokenInput:
    """One-stream hard ids (…, T) as a TokenInput (…, T, 1)."""
    return TokenInput("ids", ids=ids[..., None])


def test_three_forms_agree_on_one_hot(emb):
    ids = torch.tensor([[3, 0, 15, 7]])
    hard = emb(ids_input(ids))
    dense = emb(TokenInput("probs", probs=torch.nn.functional.one_hot(ids, 16).float()[..., None, :]))
    top1 = emb(TokenInput("topk", ids=ids[..., None, None], weights=torch.ones(1, 4, 1, 1)))
    assert torch.allclose(hard, dense) and torch.allclose(hard, top1)
    assert torch.equal(hard, emb.tables[0].weight[ids])


def test_soft_is_the_expected_mixture(emb):
    probs = torch.softmax(torch.randn(2, 5, 16), dim=-1)
    expected = torch.einsum("btk,kd->btd", probs, emb.tables[0].weight)
    assert torch.allclose(emb(TokenInput("probs", probs=probs[:, :, None])), expected, atol=1e-6)
    w, i = probs.topk(16, dim=-1)
    assert torch.allclose(emb(TokenInput("topk", ids=i[:, :, None], weights=w[:, :, None])), expected, atol=1e-5)


def test_continuous_and_padding():
    emb = TokenEmbedding(None, 8, feat_dim=5)
    batch, lengths = pad_token_inputs([TokenInput("feats", feats=torch.randn(3, 5)),
                                       TokenInput("feats", feats=torch.randn(6, 5))])
    assert lengths.tolist() == [3, 6] and emb(batch).shape == (2, 6, 8)
    ids, _ = pad_token_inputs([ids_input(torch.tensor([1, 2])), ids_input(torch.tensor([3]))])
    assert ids.ids[..., 0].tolist() == [[1, 2], [3, 0]]
    with pytest.raises(ValueError, match="features of dim 4, model takes dim 5"):
        emb(TokenInput("feats", feats=torch.randn(1, 2, 4)))


def test_padded_frames_embed_alike_for_hard_and_soft(emb):
    """A padded batch of one-hot probs or top-1 weights embeds exactly as the hard ids do, padding included
    (E[0] there, not 0): the encoder's convolutions see padded frames, so τ → 0 must give the hard input."""
    utts = [torch.tensor([3, 9, 15, 7]), torch.tensor([5]), torch.tensor([2, 11])]
    hard, lengths = pad_token_inputs([ids_input(u) for u in utts])
    dense, _ = pad_token_inputs([TokenInput("probs", probs=torch.nn.functional.one_hot(u, 16).float()[:, None])
                                 for u in utts])
    top2, _ = pad_token_inputs([TokenInput("topk", ids=torch.stack([u, (u + 1) % 16], -1)[:, None],
                                           weights=torch.tensor([1.0, 0.0]).expand(len(u), 1, 2)) for u in utts])
    assert lengths.tolist() == [4, 1, 2]
    expected = emb(hard)
    assert torch.equal(expected[1, 1:], emb.tables[0].weight[0].expand(3, 8))
    assert torch.allclose(emb(dense), expected) and torch.allclose(emb(top2), expected)
    ones = torch.ones(3, 4, 1)
    assert torch.allclose(dense.probs.sum(-1), ones) and torch.allclose(top2.weights.sum(-1), ones)


def test_bad_inputs(emb):
    with pytest.raises(ValueError, match="over K=12 tokens, model has K=16"):
        emb(TokenInput("probs", probs=torch.ones(1, 2, 1, 12) / 12))
    with pytest.raises(ValueError, match=r"^token ids outside \[0, K=16\)$"):
        emb(TokenInput("topk", ids=torch.tensor([[[[16]]]]), weights=torch.ones(1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"^token ids outside \[0, K=16\)$"):
        emb(ids_input(torch.tensor([[-1, 3]])))
    with pytest.raises(ValueError, match="trained on tokens .K=16.; it cannot take continuous features"):
        emb(TokenInput("feats", feats=torch.randn(1, 2, 3)))
    with pytest.raises(ValueError, match="trained on continuous features .dim 3.; it cannot take 'ids'"):
        TokenEmbedding(None, 8, 3)(ids_input(torch.tensor([[1]])))
    with pytest.raises(ValueError, match="2 token streams for a model of 1 streams"):
        emb(TokenInput("ids", ids=torch.tensor([[[1, 2]]])))
    with pytest.raises(ValueError, match="mixed"):
        pad_token_inputs([ids_input(torch.tensor([1])), TokenInput("feats", feats=torch.randn(1, 2))])
    with pytest.raises(ValueError, match="different stream counts"):
        pad_token_inputs([ids_input(torch.tensor([1])), TokenInput("ids", ids=torch.tensor([[1, 2]]))])


def test_centroid_init_keeps_the_codebook_geometry():
    """K-1 ≤ d: the PCA table is the centroids rotated and scaled, so pairwise distances keep their ratios."""
    gen = torch.Generator().manual_seed(0)
    centroids = torch.randn(16, 32, generator=gen).numpy()
    emb = TokenEmbedding(16, 24)
    emb.init_from_centroids(centroids)
    table = emb.tables[0].weight.detach().double()
    c = torch.as_tensor(centroids).double()
    ratio = torch.pdist(table) / torch.pdist(c)
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-4)
    assert abs(float(table.pow(2).mean()) - 1.0) < 1e-4  # the scale of nn.Embedding's N(0, 1) table
    assert emb.tables[0].weight.requires_grad  # still trained


def test_centroid_init_with_fewer_dims_than_centroids_keeps_top_components():
    gen = torch.Generator().manual_seed(1)
    centroids = (torch.randn(64, 8, generator=gen) * torch.tensor([10.0, 5, 1, 1, 1, 1, 1, 1])).numpy()
    emb = TokenEmbedding(64, 2)
    emb.init_from_centroids(centroids)
    table = emb.tables[0].weight.detach()
    var = table.var(0)
    assert var[0] > var[1] > 0  # first two principal directions, in decreasing variance
    top = torch.as_tensor(centroids[:, 0] - centroids[:, 0].mean())
    assert abs(float(torch.corrcoef(torch.stack([table[:, 0], top]))[0, 1])) > 0.95


def test_centroid_init_refuses_bad_inputs():
    with pytest.raises(ValueError, match="15 centroids for a table of K=16"):
        TokenEmbedding(16, 8).init_from_centroids(torch.randn(15, 4).numpy())
    with pytest.raises(ValueError, match="needs a discrete TokenEmbedding"):
        TokenEmbedding(None, 8, feat_dim=4).init_from_centroids(torch.randn(16, 4).numpy())


def test_init_embedding_config_key():
    from softtok.downstream.training import init_embedding
    from softtok.tokenizers.heads import build_head
    from softtok.tokenizers.kmeans import Codebook

    head = build_head("hard", Codebook(torch.randn(16, 4).numpy()))
    emb = TokenEmbedding(16, 8)
    before = emb.tables[0].weight.detach().clone()
    init_embedding(emb, "random", head)
    assert torch.equal(emb.tables[0].weight, before)
    init_embedding(emb, "centroids", head)
    assert not torch.equal(emb.tables[0].weight, before)
    with pytest.raises(ValueError, match="embed_init must be one of"):
        init_embedding(emb, "pca", head)


# ---------------------------------------------------------------- several streams


def test_streams_are_summed_tables():
    torch.manual_seed(0)
    emb = TokenEmbedding([5, 3], 4)
    ids = torch.tensor([[[0, 1], [4, 1], [2, 2]]])  # (B, T, S)
    w0, w1 = emb.tables[0].weight, emb.tables[1].weight
    assert torch.allclose(emb(TokenInput("ids", ids=ids)), w0[ids[..., 0]] + w1[ids[..., 1]])
    probs = torch.zeros(1, 1, 2, 5)
    probs[0, 0, 0, :2] = 0.5
    probs[0, 0, 1, 1:3] = torch.tensor([0.25, 0.75])
    out = emb(TokenInput("probs", probs=probs))
    assert torch.allclose(out[0, 0], 0.5 * w0[0] + 0.5 * w0[1] + 0.25 * w1[1] + 0.75 * w1[2], atol=1e-6)


def test_stacked_lookup_equals_the_per_stream_loop():
    """The one-op path (ids, probs, top-k) against Σ_s of each stream's own one-stream embedding."""
    torch.manual_seed(2)
    sizes = (5, 3, 4)
    emb = TokenEmbedding(list(sizes), 6)
    singles = [TokenEmbedding(k, 6) for k in sizes]
    for one, table in zip(singles, emb.tables):
        one.tables[0].load_state_dict(table.state_dict())
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, k, (2, 7), generator=gen) for k in sizes]
    probs = [torch.softmax(torch.randn(2, 7, k, generator=gen), -1) for k in sizes]
    top = [p.topk(2, dim=-1) for p in probs]
    padded = torch.stack([torch.nn.functional.pad(p, (0, 5 - p.shape[-1])) for p in probs], dim=2)
    forms = [(TokenInput("ids", ids=torch.stack(ids, -1)), [ids_input(i) for i in ids]),
             (TokenInput("probs", probs=padded), [TokenInput("probs", probs=p[:, :, None]) for p in probs]),
             (TokenInput("topk", ids=torch.stack([t.indices for t in top], 2), weights=torch.stack([t.values for t in top], 2)),
              [TokenInput("topk", ids=t.indices[:, :, None], weights=t.values[:, :, None]) for t in top])]
    for stacked, parts in forms:
        loop = sum(e(p) for e, p in zip(singles, parts))
        assert torch.allclose(emb(stacked), loop, atol=1e-6)
    emb(forms[0][0]).sum().backward()
    assert all(t.weight.grad is not None and t.weight.grad.abs().sum() > 0 for t in emb.tables)
    bad = torch.stack([ids[0], ids[0], ids[2]], -1)
    with pytest.raises(ValueError, match=r"^stream 2: token ids outside \[0, K=3\)$"):
        emb(TokenInput("ids", ids=bad))
    with pytest.raises(ValueError, match="soft probabilities over K=4 tokens, model has K=5.3.4"):
        emb(TokenInput("probs", probs=padded[..., :4]))


def test_continuous_sources_sum_to_one_linear_over_concatenated_features():
    torch.manual_seed(1)
    emb = TokenEmbedding(None, 4, feat_dim=[3, 2])
    x = torch.randn(2, 7, 5)
    weight = torch.cat([emb.linears[0].weight, emb.linears[1].weight], dim=1)
    bias = emb.linears[0].bias + emb.linears[1].bias
    assert torch.allclose(emb(TokenInput("feats", feats=x)), x @ weight.T + bias, atol=1e-6)


def test_stream_centroid_init_rotates_each_stream_and_keeps_its_geometry():
    gen = np.random.default_rng(0)
    cbs = [gen.normal(size=(8, 3)).astype(np.float32), gen.normal(size=(6, 5)).astype(np.float32)]
    emb = TokenEmbedding([8, 6], 16)
    emb.init_from_centroids(cbs)
    for table, c in zip([t.weight.detach().double() for t in emb.tables], cbs):
        ratio = torch.pdist(table) / torch.pdist(torch.as_tensor(c).double())
        assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-4)  # a rotation and a scale
        assert abs(float(table.pow(2).mean()) - 0.5) < 1e-4  # 1/S of a unit mean square
    one = TokenEmbedding(8, 16)
    one.init_from_centroids(cbs[0])
    assert not torch.allclose(one.tables[0].weight, emb.tables[0].weight * 2 ** 0.5, atol=1e-3)  # rotated
    with pytest.raises(ValueError, match="1 codebooks for 2 embedding streams"):
        emb.init_from_centroids(cbs[:1])


def test_checkpoints_of_the_earlier_layouts_load():
    """Models trained before the one embedding class (``table``, ``linear``, ``streams.<s>.table``) still load."""
    torch.manual_seed(3)
    one, two, cont = TokenEmbedding(5, 4), TokenEmbedding([5, 3], 4), TokenEmbedding(None, 4, [3, 2])
    legacy = {"table.weight": torch.randn(5, 4)}
    one.load_state_dict(legacy)
    assert torch.equal(one.tables[0].weight, legacy["table.weight"])
    two.load_state_dict({"streams.0.table.weight": torch.ones(5, 4), "streams.1.table.weight": torch.zeros(3, 4)})
    assert torch.equal(two.tables[0].weight, torch.ones(5, 4)) and torch.equal(two.tables[1].weight, torch.zeros(3, 4))
    cont.load_state_dict({f"streams.{s}.linear.{p}": t for s, lin in enumerate(cont.linears)
                          for p, t in lin.state_dict().items()})
    with pytest.raises(RuntimeError, match="Missing key"):
        one.load_state_dict({"other.weight": torch.randn(5, 4)})
