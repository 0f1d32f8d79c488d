"""TokenEmbedding: hard ids == dense one-hot == top-1; soft mixtures; batching; bad inputs."""

from __future__ import annotations

import pytest
import torch

from softtok.downstream.embedding import TokenEmbedding, pad_token_inputs
from softtok.tokenizers.heads import TokenInput


@pytest.fixture
def emb():
    torch.manual_seed(0)
    return TokenEmbedding(16, 8)


def test_three_forms_agree_on_one_hot(emb):
    ids = torch.tensor([[3, 0, 15, 7]])
    hard = emb(TokenInput("ids", ids=ids))
    dense = emb(TokenInput("probs", probs=torch.nn.functional.one_hot(ids, 16).float()))
    top1 = emb(TokenInput("topk", ids=ids[..., None], weights=torch.ones(1, 4, 1)))
    assert torch.allclose(hard, dense) and torch.allclose(hard, top1)


def test_soft_is_the_expected_mixture(emb):
    probs = torch.softmax(torch.randn(2, 5, 16), dim=-1)
    expected = torch.einsum("btk,kd->btd", probs, emb.table.weight)
    assert torch.allclose(emb(TokenInput("probs", probs=probs)), expected, atol=1e-6)
    w, i = probs.topk(16, dim=-1)
    assert torch.allclose(emb(TokenInput("topk", ids=i, weights=w)), expected, atol=1e-5)


def test_continuous_and_padding():
    emb = TokenEmbedding(None, 8, feat_dim=5)
    batch, lengths = pad_token_inputs([TokenInput("feats", feats=torch.randn(3, 5)),
                                       TokenInput("feats", feats=torch.randn(6, 5))])
    assert lengths.tolist() == [3, 6] and emb(batch).shape == (2, 6, 8)
    ids, _ = pad_token_inputs([TokenInput("ids", ids=torch.tensor([1, 2])), TokenInput("ids", ids=torch.tensor([3]))])
    assert ids.ids.tolist() == [[1, 2], [3, 0]]


def test_padded_frames_embed_alike_for_hard_and_soft(emb):
    """A padded batch of one-hot probs or top-1 weights embeds exactly as the hard ids do, padding included
    (E[0] there, not 0): the encoder's convolutions see padded frames, so τ → 0 must give the hard input."""
    utts = [torch.tensor([3, 9, 15, 7]), torch.tensor([5]), torch.tensor([2, 11])]
    hard, lengths = pad_token_inputs([TokenInput("ids", ids=u) for u in utts])
    dense, _ = pad_token_inputs([TokenInput("probs", probs=torch.nn.functional.one_hot(u, 16).float()) for u in utts])
    top2, _ = pad_token_inputs([TokenInput("topk", ids=torch.stack([u, (u + 1) % 16], -1),
                                           weights=torch.tensor([1.0, 0.0]).expand(len(u), 2)) for u in utts])
    assert lengths.tolist() == [4, 1, 2]
    expected = emb(hard)
    assert torch.equal(expected[1, 1:], emb.table.weight[0].expand(3, 8))
    assert torch.allclose(emb(dense), expected) and torch.allclose(emb(top2), expected)
    assert torch.allclose(dense.probs.sum(-1), torch.ones(3, 4)) and torch.allclose(top2.weights.sum(-1), torch.ones(3, 4))


def test_bad_inputs(emb):
    with pytest.raises(ValueError, match="over 12 tokens, model has K=16"):
        emb(TokenInput("probs", probs=torch.ones(1, 2, 12) / 12))
    with pytest.raises(ValueError, match="outside"):
        emb(TokenInput("topk", ids=torch.tensor([[[16]]]), weights=torch.ones(1, 1, 1)))
    with pytest.raises(ValueError, match="discrete TokenEmbedding cannot take 'feats'"):
        emb(TokenInput("feats", feats=torch.randn(1, 2, 3)))
    with pytest.raises(ValueError, match="mixed"):
        pad_token_inputs([TokenInput("ids", ids=torch.tensor([1])), TokenInput("feats", feats=torch.randn(1, 2))])


def test_centroid_init_keeps_the_codebook_geometry():
    """K-1 ≤ d: the PCA table is the centroids rotated and scaled, so pairwise distances keep their ratios."""
    gen = torch.Generator().manual_seed(0)
    centroids = torch.randn(16, 32, generator=gen).numpy()
    emb = TokenEmbedding(16, 24)
    emb.init_from_centroids(centroids)
    table = emb.table.weight.detach().double()
    c = torch.as_tensor(centroids).double()
    ratio = torch.pdist(table) / torch.pdist(c)
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-4)
    assert abs(float(table.pow(2).mean()) - 1.0) < 1e-4  # the scale of nn.Embedding's N(0, 1) table
    assert emb.table.weight.requires_grad  # still trained


def test_centroid_init_with_fewer_dims_than_centroids_keeps_top_components():
    gen = torch.Generator().manual_seed(1)
    centroids = (torch.randn(64, 8, generator=gen) * torch.tensor([10.0, 5, 1, 1, 1, 1, 1, 1])).numpy()
    emb = TokenEmbedding(64, 2)
    emb.init_from_centroids(centroids)
    table = emb.table.weight.detach()
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
    from softtok.tokenizers.kmeans import Codebook

    codebook = Codebook(torch.randn(16, 4).numpy())
    emb = TokenEmbedding(16, 8)
    before = emb.table.weight.detach().clone()
    init_embedding(emb, "random", codebook)
    assert torch.equal(emb.table.weight, before)
    init_embedding(emb, "centroids", codebook)
    assert not torch.equal(emb.table.weight, before)
    with pytest.raises(ValueError, match="embed_init must be one of"):
        init_embedding(emb, "pca", codebook)
