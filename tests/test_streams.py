"""Multi-stream tokens (several SSL layers; dMel channels): heads, embeddings, ASR train + decode, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.decode import decode
from softtok.downstream.asr.train import load_trained, train
from softtok.downstream.embedding import StreamEmbedding, TokenEmbedding, pad_token_inputs
from softtok.downstream.training import load_codebooks
from softtok.tokenizers.dmel import learn_dmel, run_learn_dmel
from softtok.tokenizers.fileio import ArkScpWriter, save_yaml
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.jobs import run_learn_kmeans
from softtok.tokenizers.kmeans import Codebook, CodebookMismatch
from softtok.tokenizers.streams import (MultiStreamHead, StreamTokenInput, build_input_head, build_stream_head,
                                        expand_codebook, split_list)


def codebook(k: int, dim: int, seed: int, **spec) -> Codebook:
    gen = np.random.default_rng(seed)
    return Codebook(gen.normal(size=(k, dim)).astype(np.float32), {"feature_spec": spec})


# ---------------------------------------------------------------- embedding


def test_stream_embedding_is_the_sum_of_single_stream_embeddings():
    torch.manual_seed(0)
    emb = StreamEmbedding([5, 3], 4)
    ids = [torch.tensor([[0, 4, 2]]), torch.tensor([[1, 1, 2]])]
    out = emb(StreamTokenInput([TokenInput("ids", ids=i) for i in ids]))
    by_hand = emb.streams[0].table.weight[ids[0]] + emb.streams[1].table.weight[ids[1]]
    assert torch.allclose(out, by_hand)
    probs = [torch.tensor([[[0.5, 0.5, 0, 0, 0]]]), torch.tensor([[[0.0, 0.25, 0.75]]])]
    out = emb(StreamTokenInput([TokenInput("probs", probs=p) for p in probs]))
    w0, w1 = emb.streams[0].table.weight, emb.streams[1].table.weight
    assert torch.allclose(out[0, 0], 0.5 * w0[0] + 0.5 * w0[1] + 0.25 * w1[1] + 0.75 * w1[2], atol=1e-6)
    single = [TokenEmbedding(5, 4), TokenEmbedding(3, 4)]
    for s, e in zip(single, emb.streams):
        s.load_state_dict(e.state_dict())
    assert torch.allclose(out, single[0](TokenInput("probs", probs=probs[0])) + single[1](TokenInput("probs", probs=probs[1])))


def test_continuous_streams_sum_to_one_linear_over_concatenated_features():
    torch.manual_seed(1)
    emb = StreamEmbedding(None, 4, feat_dim=[3, 2])
    x = torch.randn(2, 7, 5)
    out = emb(StreamTokenInput([TokenInput("feats", feats=x[..., :3]), TokenInput("feats", feats=x[..., 3:])]))
    weight = torch.cat([emb.streams[0].linear.weight, emb.streams[1].linear.weight], dim=1)
    bias = emb.streams[0].linear.bias + emb.streams[1].linear.bias
    assert torch.allclose(out, x @ weight.T + bias, atol=1e-6)


def test_stream_centroid_init_rotates_each_stream_and_keeps_its_geometry():
    cbs = [codebook(8, 3, 0).centroids, codebook(6, 5, 1).centroids]
    emb = StreamEmbedding([8, 6], 16)
    emb.init_from_centroids(cbs)
    for table, c in zip([s.table.weight.detach().double() for s in emb.streams], cbs):
        ratio = torch.pdist(table) / torch.pdist(torch.as_tensor(c).double())
        assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-4)  # a rotation and a scale
        assert abs(float(table.pow(2).mean()) - 0.5) < 1e-4  # 1/S of a unit mean square
    one = TokenEmbedding(8, 16)
    one.init_from_centroids(cbs[0])
    assert not torch.allclose(one.table.weight, emb.streams[0].table.weight * 2 ** 0.5, atol=1e-3)  # rotated
    with pytest.raises(ValueError, match="1 codebooks for 2 embedding streams"):
        emb.init_from_centroids(cbs[:1])


def test_padding_stream_inputs_and_errors():
    a = StreamTokenInput([TokenInput("ids", ids=torch.tensor([1, 2])), TokenInput("ids", ids=torch.tensor([0, 3]))])
    b = StreamTokenInput([TokenInput("ids", ids=torch.tensor([4])), TokenInput("ids", ids=torch.tensor([5]))])
    batch, lengths = pad_token_inputs([a, b])
    assert lengths.tolist() == [2, 1] and batch.parts[1].ids.tolist() == [[0, 3], [5, 0]]
    emb = StreamEmbedding([6, 6], 4)
    with pytest.raises(ValueError, match="1 token streams for a model of 2 streams"):
        emb(StreamTokenInput([TokenInput("ids", ids=torch.tensor([[1]]))]))
    with pytest.raises(ValueError, match="needs a StreamTokenInput"):
        emb(TokenInput("ids", ids=torch.tensor([[1]])))
    with pytest.raises(ValueError, match="share one kind"):
        StreamTokenInput([TokenInput("ids", ids=torch.tensor([1])), TokenInput("feats", feats=torch.zeros(1, 2))])


# ---------------------------------------------------------------- heads


def test_multi_stream_head_splits_columns_and_tau_to_zero_is_hard():
    cbs = [codebook(16, 6, 0), codebook(8, 4, 1)]
    x = torch.randn(50, 10)
    hard = build_stream_head("hard", cbs, [6, 4])(x)
    assert torch.equal(hard.parts[0].ids, cbs[0].assign(x[:, :6])) and torch.equal(hard.parts[1].ids, cbs[1].assign(x[:, 6:]))
    soft = build_stream_head("soft", cbs, [6, 4], tau=[1e-9, 1e-9])(x)
    for p, h in zip(soft.parts, hard.parts):
        assert torch.equal(p.probs.argmax(1), h.ids) and torch.allclose(p.probs.max(1).values, torch.ones(50))
    warm = build_stream_head("soft", cbs, [6, 4], tau=[2.0, 0.5])
    expected = build_head("soft", cbs[1], tau=0.5)(x[:, 6:]).probs
    assert torch.allclose(warm(x).parts[1].probs, expected) and warm.settings() == "soft_tau2-0.5"
    top = build_stream_head("soft", cbs, [6, 4], tau=1.0, top_k=3)
    assert top.settings() == "soft_tau1-1_topk3" and top(x).parts[0].ids.shape == (50, 3)
    assert isinstance(build_input_head("hard", cbs[:1], [6]), type(build_head("hard", cbs[0])))  # one stream: as before


def test_multi_stream_bad_inputs_are_one_line_errors(tmp_path):
    cbs = [codebook(16, 6, 0), codebook(8, 4, 1)]
    with pytest.raises(ValueError, match=r"^tau: 3 values for 2 feature streams$"):
        build_stream_head("soft", cbs, [6, 4], tau=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^2 codebooks \(--kmeans\) for 3 feature streams \(--feats\)$"):
        build_stream_head("hard", cbs, [6, 4, 2])
    with pytest.raises(ValueError, match="stream 2: codebook .* has dim 4, features 5"):
        build_stream_head("hard", cbs, [6, 5])
    with pytest.raises(ValueError, match=r"expected \(T, 10\)"):
        build_stream_head("hard", cbs, [6, 4])(torch.zeros(3, 9))
    with pytest.raises(ValueError, match="needs a k-means codebook"):
        build_stream_head("soft", None, [6, 4], tau=1.0)
    with pytest.raises(ValueError, match="empty item"):
        split_list("a.scp,,b.scp")
    for i, cb in enumerate(cbs):
        cb.save(tmp_path / f"km{i}.npy")
    feats = write_stream_feats(tmp_path / "f", {"u1": 5}, [6, 4], seed=0)
    with pytest.raises(ValueError, match=r"1 codebooks \(--kmeans .*km0.npy\) for 2 feature streams"):
        load_codebooks(str(tmp_path / "km0.npy"), feats)
    same_dim = write_stream_feats(tmp_path / "g", {"u1": 5}, [4, 4], seed=0)
    for layer in (1, 2):
        codebook(8, 4, layer, feature="hubert", layer=layer, checkpoint="m").save(tmp_path / f"l{layer}.npy")
    swapped = ",".join(reversed(same_dim.split(",")))
    assert len(load_codebooks(f"{tmp_path}/l1.npy,{tmp_path}/l2.npy", same_dim)) == 2
    with pytest.raises(CodebookMismatch, match="layer2/feats.scp: layer=2 but codebook .*l1.npy has layer=1"):
        load_codebooks(f"{tmp_path}/l1.npy,{tmp_path}/l2.npy", swapped)


# ---------------------------------------------------------------- dMel


def test_dmel_bins_and_soft_binning():
    x = np.array([[0.0, 3.0], [1.0, 2.0], [3.0, 0.5]], dtype=np.float32)
    cb = learn_dmel(x, 4, feature_spec={"feature": "fbank", "dim": 2})
    assert np.allclose(cb.centroids[:, 0], [0, 1, 2, 3]) and np.allclose(cb.centroids[:, 1], [0, 1, 2, 3])  # global range
    assert cb.meta["kind"] == "dmel" and cb.meta["bits"] == 2 and cb.meta["per_channel"]
    own = learn_dmel(x, 3, per_channel_range=True)
    assert np.allclose(own.centroids[:, 1], [0.5, 1.75, 3.0])
    head = build_input_head("hard", [cb], [2])
    assert isinstance(head, MultiStreamHead) and len(head(torch.zeros(3, 2)).parts) == 2
    frames = torch.tensor([[0.4, 2.6], [2.9, 1.4]])
    ids = head(frames)
    assert ids.parts[0].ids.tolist() == [0, 3] and ids.parts[1].ids.tolist() == [3, 1]  # nearest bin per channel
    soft = build_input_head("soft", [cb], [2], tau=0.5)(frames)
    expected = torch.softmax(-(frames[0, 1] - torch.arange(4.0)) ** 2 / 0.5, dim=0)
    assert torch.allclose(soft.parts[1].probs[0], expected, atol=1e-6)
    cold = build_input_head("soft", [cb], [2], tau=1e-9)(frames)
    assert [p.probs.argmax(1).tolist() for p in cold.parts] == [[0, 3], [3, 1]]
    with pytest.raises(ValueError, match="at least 2 bins"):
        learn_dmel(x, 1)


def test_vectorised_channel_head_equals_one_head_per_channel():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, generator=gen) * 3
    cb = learn_dmel(x.numpy(), 16, per_channel_range=True)
    parts = expand_codebook(cb)
    for name, conf in (("hard", {}), ("soft", {"tau": 0.3})):
        fast = build_stream_head(name, [cb], [12], **conf)(x).parts
        slow = [build_head(name, p, **conf)(x[:, c:c + 1]) for c, p in enumerate(parts)]
        for f, s in zip(fast, slow):
            assert (torch.equal(f.ids, s.ids) if name == "hard" else torch.allclose(f.probs, s.probs, atol=1e-5))
    top = build_stream_head("soft", [cb], [12], tau=0.3, top_k=2)(x).parts  # top-k: one head per channel
    assert len(top) == 12 and top[5].ids.shape == (40, 2)
    assert torch.equal(top[5].ids[:, 0], build_head("hard", parts[5])(x[:, 5:6]).ids)


def test_dmel_codebook_file_roundtrip_and_single_stream_refusal(tmp_path):
    feats = write_stream_feats(tmp_path / "f", {"u1": 20, "u2": 30}, [5], seed=3, feature="fbank")
    summary = run_learn_dmel(feats, 8, str(tmp_path / "dmel.npy"))
    cb = Codebook.load(tmp_path / "dmel.npy")
    assert summary["bins"] == 8 and cb.centroids.shape == (8, 5) and cb.meta["feature_spec"]["feature"] == "fbank"
    assert [c.dim for c in expand_codebook(cb)] == [1] * 5
    with pytest.raises(ValueError, match="dmel.npy: one 1-D codebook per channel"):
        build_head("hard", cb)


# ---------------------------------------------------------------- ASR end to end

TINY_CONF = {"seed": 0, "embed_init": "centroids", "max_epoch": 1, "batch_frames": 400, "lr": 0.002,
             "warmup_steps": 2, "keep_nbest": 1,
             "model": {"embed_dim": 16, "encoder": "conformer",
                       "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 1,
                                        "input_layer": "conv2d2"},
                       "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1},
                       "masking_conf": {"num_channel_masks": 0}}}


def write_stream_feats(root: Path, lengths: dict, dims: list, seed: int, feature: str = "hubert") -> str:
    """One random feats.scp (+ feats.yaml, layer i+1) per stream; their paths as a comma list."""
    gen = np.random.default_rng(seed)
    scps = []
    for i, dim in enumerate(dims):
        out = root / f"layer{i + 1}"
        with ArkScpWriter(out / "feats.ark", out / "feats.scp") as w:
            for utt, n in lengths.items():
                w.write(utt, gen.normal(size=(n, dim)).astype(np.float32))
        spec = {"feature": feature, "dim": dim} if feature == "fbank" else {"feature": feature, "dim": dim,
                                                                             "layer": i + 1, "checkpoint": "m"}
        save_yaml(out / "feats.yaml", spec)
        scps.append(str(out / "feats.scp"))
    return ",".join(scps)


@pytest.fixture(scope="module")
def two_stream(tmp_path_factory):
    """Two-stream features (dims 6 and 4), one K=8 k-means per stream, and a model trained on hard tokens."""
    root = tmp_path_factory.mktemp("streams")
    lengths = {f"utt{i:02d}": 30 + 7 * i for i in range(10)}
    feats = write_stream_feats(root / "feats", lengths, [6, 4], seed=0)
    (root / "text").write_text("".join(f"{u} {'AB BA' if i % 2 else 'BA'}\n" for i, u in enumerate(lengths)))
    kms = []
    for i, scp in enumerate(split_list(feats)):
        run_learn_kmeans(scp, 8, "faiss", str(root / f"km{i}.npy"))
        kms.append(str(root / f"km{i}.npy"))
    (root / "conf.yaml").write_text(yaml.safe_dump(TINY_CONF))
    args = (str(root / "conf.yaml"), feats, str(root / "text"), feats, str(root / "text"))
    train(*args, str(root / "hard"), "hard", ",".join(kms), device="cpu")
    return root, feats, ",".join(kms), args


def test_two_stream_asr_trains_on_hard_tokens_and_decodes_every_head(two_stream, tmp_path):
    root, feats, kms, args = two_stream
    model, config, _ = load_trained(root / "hard")
    assert config["n_tokens"] == [8, 8] and config["kmeans"] == split_list(kms)
    codebooks = [Codebook.load(p) for p in split_list(kms)]
    assert isinstance(model.embedding, StreamEmbedding)
    text = str(root / "text")
    hard = decode(str(root / "hard"), feats, str(tmp_path / "hard"), text, "hard", device="cpu")
    tiny = decode(str(root / "hard"), feats, str(tmp_path / "tiny"), text, "soft", {"tau": [1e-12, 1e-12]}, device="cpu")
    assert hard["utts"] == 10 and (tmp_path / "hard" / "hyp").read_text() == (tmp_path / "tiny" / "hyp").read_text()
    data = TokenASRData(feats)
    utts = data.utts[-1:]  # one utterance: no padding (hard pads embed E_0, soft pads 0, and convolutions see them)
    encoded = [model.encode(*data.collate(utts, build_input_head(name, codebooks, [6, 4], **conf))[1:3])[0]
               for name, conf in (("hard", {}), ("soft", {"tau": [1e-12, 1e-12]}), ("soft", {"tau": [0.5, 2.0]}))]
    assert torch.allclose(encoded[0], encoded[1], atol=1e-5) and not torch.allclose(encoded[0], encoded[2], atol=1e-3)
    soft = decode(str(root / "hard"), feats, str(tmp_path / "soft"), text, "soft", {"tau": [0.5, 2.0], "top_k": 4},
                  device="cpu")
    assert soft["utts"] == 10
    assert yaml.safe_load((tmp_path / "soft" / "decode.yaml").read_text())["settings"] == "soft_tau0.5-2_topk4"
    with pytest.raises(ValueError, match="tau: 1 values for 2 feature streams"):
        decode(str(root / "hard"), feats, str(tmp_path / "x"), text, "soft", {"tau": [1.0]}, device="cpu")
    with pytest.raises(ValueError, match="the model reads 2 feature streams, --feats gives 1"):
        decode(str(root / "hard"), split_list(feats)[0], str(tmp_path / "x"), text, "hard", device="cpu")


def test_two_stream_continuous_and_soft_trained_models(two_stream, tmp_path):
    root, feats, kms, args = two_stream
    train(*args, str(tmp_path / "cont"), "continuous", device="cpu")
    _, config, _ = load_trained(tmp_path / "cont")
    assert config["feat_dim"] == [6, 4] and config["n_tokens"] is None
    assert decode(str(tmp_path / "cont"), feats, str(tmp_path / "dc"), args[2], "continuous", device="cpu")["utts"] == 10
    train(*args, str(tmp_path / "soft"), "soft", kms, tau_factor=0.1, device="cpu")
    taus = load_trained(tmp_path / "soft")[1]["head_conf"]["tau"]
    assert isinstance(taus, list) and len(taus) == 2 and all(t > 0 for t in taus) and taus[0] != taus[1]


def test_dmel_asr_trains_and_soft_binning_at_zero_tau_is_hard(tmp_path):
    lengths = {f"utt{i:02d}": 30 + 5 * i for i in range(8)}
    feats = write_stream_feats(tmp_path / "feats", lengths, [6], seed=1, feature="fbank")
    run_learn_dmel(feats, 4, str(tmp_path / "dmel.npy"))
    (tmp_path / "text").write_text("".join(f"{u} AB\n" for u in lengths))
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(TINY_CONF))
    text = str(tmp_path / "text")
    train(str(tmp_path / "conf.yaml"), feats, text, feats, text, str(tmp_path / "exp"), "hard",
          str(tmp_path / "dmel.npy"), device="cpu")
    model, config, _ = load_trained(tmp_path / "exp")
    assert config["n_tokens"] == [4] * 6 and len(model.embedding.streams) == 6
    decode(str(tmp_path / "exp"), feats, str(tmp_path / "hard"), text, "hard", device="cpu")
    decode(str(tmp_path / "exp"), feats, str(tmp_path / "tiny"), text, "soft", {"tau": 1e-12}, device="cpu")
    assert (tmp_path / "hard" / "hyp").read_text() == (tmp_path / "tiny" / "hyp").read_text()


# ---------------------------------------------------------------- multi-layer dump


def test_dump_several_layers_one_folder_each(tmp_path, tone_dir):
    transformers = pytest.importorskip("transformers")
    from softtok.cli import build_parser
    from softtok.tokenizers.dump_features import dump_features
    from softtok.tokenizers.fileio import load_scp_dict, load_yaml

    torch.manual_seed(0)
    config = transformers.HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                       conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    transformers.HubertModel(config).eval().save_pretrained(tmp_path / "hubert")
    args = build_parser().parse_args(["dump-features", "--data-dir", str(tone_dir), "--feature", "hubert",
                                      "--layer", "1,2", "--out-dir", "x"])
    assert args.layer == [1, 2]
    out = dump_features(str(tone_dir), "hubert", str(tmp_path / "l{layer}" / "train"), checkpoint=str(tmp_path / "hubert"),
                        layer=[1, 2])
    assert out["output"] == f"{tmp_path}/l1/train/feats.scp,{tmp_path}/l2/train/feats.scp"
    alone = dump_features(str(tone_dir), "hubert", str(tmp_path / "alone"), checkpoint=str(tmp_path / "hubert"), layer=[2])
    assert [load_yaml(tmp_path / f"l{n}" / "train" / "feats.yaml")["layer"] for n in (1, 2)] == [1, 2]
    two, ref = load_scp_dict(split_list(out["output"])[1]), load_scp_dict(alone["output"])
    one = load_scp_dict(split_list(out["output"])[0])
    assert set(two) == set(ref) == {"utt_a", "utt_b", "utt_c"}
    assert all(np.array_equal(two[u], ref[u]) and not np.allclose(one[u], ref[u]) for u in ref)
    default = dump_features(str(tone_dir), "hubert", str(tmp_path / "d"), checkpoint=str(tmp_path / "hubert"),
                            layer=[2, 1])
    assert default["output"] == f"{tmp_path}/d/layer2/feats.scp,{tmp_path}/d/layer1/feats.scp"


def test_stacked_lookup_equals_the_per_stream_loop():
    """The one-op path (ids, probs, top-k) against Σ_s of each stream's own TokenEmbedding."""
    torch.manual_seed(2)
    emb = StreamEmbedding([5, 3, 4], 6)
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, k, (2, 7), generator=gen) for k in (5, 3, 4)]
    probs = [torch.softmax(torch.randn(2, 7, k, generator=gen), -1) for k in (5, 3, 4)]
    top = [p.topk(2, dim=-1) for p in probs]
    forms = [[TokenInput("ids", ids=i) for i in ids], [TokenInput("probs", probs=p) for p in probs],
             [TokenInput("topk", ids=t.indices, weights=t.values) for t in top]]
    for parts in forms:
        loop = sum(e(p) for e, p in zip(emb.streams, parts))
        assert torch.allclose(emb(StreamTokenInput(parts)), loop, atol=1e-6)
    loss = emb(StreamTokenInput(forms[0])).sum()
    loss.backward()
    assert all(e.table.weight.grad is not None and e.table.weight.grad.abs().sum() > 0 for e in emb.streams)
    with pytest.raises(ValueError, match="stream 2: token ids outside"):
        emb(StreamTokenInput([TokenInput("ids", ids=i) for i in (ids[0], ids[0], ids[2])]))
    with pytest.raises(ValueError, match="stream 1: soft probabilities over 3 tokens, model has K=5"):
        emb(StreamTokenInput([TokenInput("probs", probs=p) for p in (probs[1], probs[1], probs[2])]))


def test_recipe_tau_sweep_and_decode_sets_give_one_tau_per_stream(two_stream, tmp_path):
    import os
    import shutil

    from softtok.recipes.asr import decode_sets, sweep_tau

    root, feats, kms, args = two_stream
    exp = tmp_path / "hard"
    shutil.copytree(root / "hard", exp)
    dumps = []
    for i, scp in enumerate(split_list(feats)):
        (tmp_path / f"l{i}").mkdir()
        os.symlink(Path(scp).parent, tmp_path / f"l{i}" / "dev")
        dumps.append(str(tmp_path / f"l{i}"))
    (tmp_path / "data" / "dev").mkdir(parents=True)
    shutil.copy(args[2], tmp_path / "data" / "dev" / "text")
    best = sweep_tau(str(exp), feats, args[2], factors=[0.01, 0.1])
    sweep = yaml.safe_load((exp / "tau_sweep.yaml").read_text())
    scales = sweep["median_sqdist"]
    assert isinstance(scales, list) and len(scales) == 2 and scales[0] != scales[1]
    assert sweep["sweep"][1]["tau"] == [float(f"{0.1 * s:.4g}") for s in scales]
    assert best["tau"] in [r["tau"] for r in sweep["sweep"]]
    tag = "-".join(f"{t:g}" for t in best["tau"])
    assert (exp / f"decode_soft_tau{tag}_greedy" / "dev" / "wer.txt").is_file()
    assert decode_sets(str(exp), ",".join(dumps), str(tmp_path / "data"), ["dev"]) == {"decoded": 0, "sets": 1}
    shutil.rmtree(exp / "decode_hard_greedy")
    assert decode_sets(str(exp), ",".join(dumps), str(tmp_path / "data"), ["dev"]) == {"decoded": 1, "sets": 1}
