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


def test_bad_inputs(emb):
    with pytest.raises(ValueError, match="over 12 tokens, model has K=16"):
        emb(TokenInput("probs", probs=torch.ones(1, 2, 12) / 12))
    with pytest.raises(ValueError, match="outside"):
        emb(TokenInput("topk", ids=torch.tensor([[[16]]]), weights=torch.ones(1, 1, 1)))
    with pytest.raises(ValueError, match="discrete TokenEmbedding cannot take 'feats'"):
        emb(TokenInput("feats", feats=torch.randn(1, 2, 3)))
    with pytest.raises(ValueError, match="mixed"):
        pad_token_inputs([TokenInput("ids", ids=torch.tensor([1])), TokenInput("feats", feats=torch.randn(1, 2))])
