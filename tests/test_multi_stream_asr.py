"""Multi-stream tokens (several SSL layers; dMel channels) end to end: codebooks per source, dMel codebooks, ASR
train + decode, τ sweep, multi-layer dumps (the heads and embedding themselves: test_heads.py, test_embedding.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.decode import decode
from softtok.downstream.asr.train import load_trained, train
from softtok.downstream.data import pad_token_inputs
from softtok.downstream.training import load_codebooks
from softtok.tokenizers.dmel import learn_dmel, run_learn_dmel
from softtok.tokenizers.fileio import ArkScpWriter, save_yaml
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.jobs import run_dump_tokens, run_learn_kmeans
from softtok.tokenizers.kmeans import Codebook, CodebookMismatch
from softtok.tokenizers.streams import split_list


def codebook(k: int, dim: int, seed: int, **spec) -> Codebook:
    gen = np.random.default_rng(seed)
    return Codebook(gen.normal(size=(k, dim)).astype(np.float32), {"feature_spec": spec})


# ---------------------------------------------------------------- batching and codebooks


def test_padding_stream_inputs():
    a = TokenInput("ids", ids=torch.tensor([[1, 0], [2, 3]]))
    b = TokenInput("ids", ids=torch.tensor([[4, 5]]))
    batch, lengths = pad_token_inputs([a, b])
    assert lengths.tolist() == [2, 1] and batch.ids[..., 1].tolist() == [[0, 3], [5, 0]]


def test_codebooks_per_source_are_checked_against_their_features(tmp_path):
    cbs = [codebook(16, 6, 0), codebook(8, 4, 1)]
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


def test_dmel_bins():
    x = np.array([[0.0, 3.0], [1.0, 2.0], [3.0, 0.5]], dtype=np.float32)
    cb = learn_dmel(x, 4, feature_spec={"feature": "fbank", "dim": 2})
    assert np.allclose(cb.centroids[:, 0], [0, 1, 2, 3]) and np.allclose(cb.centroids[:, 1], [0, 1, 2, 3])  # global range
    assert cb.meta["kind"] == "dmel" and cb.meta["bits"] == 2 and cb.meta["per_channel"]
    own = learn_dmel(x, 3, per_channel_range=True)
    assert np.allclose(own.centroids[:, 1], [0.5, 1.75, 3.0])
    with pytest.raises(ValueError, match="at least 2 bins"):
        learn_dmel(x, 1)


def test_dmel_codebook_file_roundtrip_and_dump_tokens_refusal(tmp_path):
    feats = write_stream_feats(tmp_path / "f", {"u1": 20, "u2": 30}, [5], seed=3, feature="fbank")
    summary = run_learn_dmel(feats, 8, str(tmp_path / "dmel.npy"))
    cb = Codebook.load(tmp_path / "dmel.npy")
    assert summary["bins"] == 8 and cb.centroids.shape == (8, 5) and cb.meta["feature_spec"]["feature"] == "fbank"
    assert build_head("hard", cb).codebooks.sizes == [8] * 5
    with pytest.raises(ValueError, match="dmel.npy: one 1-D codebook per channel"):
        run_dump_tokens(feats, str(tmp_path / "dmel.npy"), "hard", str(tmp_path / "tokens"))


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
    assert model.embedding.n_streams == 2
    text = str(root / "text")
    hard = decode(str(root / "hard"), feats, str(tmp_path / "hard"), text, "hard", device="cpu")
    tiny = decode(str(root / "hard"), feats, str(tmp_path / "tiny"), text, "soft", {"tau": [1e-12, 1e-12]}, device="cpu")
    assert hard["utts"] == 10 and (tmp_path / "hard" / "hyp").read_text() == (tmp_path / "tiny" / "hyp").read_text()
    data = TokenASRData(feats)
    utts = data.utts[-1:]  # one utterance: no padding (hard pads embed E_0, soft pads 0, and convolutions see them)
    encoded = [model.encode(*data.collate(utts, build_head(name, codebooks, [6, 4], **conf))[1:3])[0]
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
    assert config["n_tokens"] == [4] * 6 and model.embedding.n_streams == 6
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
