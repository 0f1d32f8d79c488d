"""SSL featurizers (hubert, wavlm, wav2vec2) on tiny random models in HF and fairseq/unilm formats.

References: transformers' own forward pass (``output_hidden_states``) for HF dirs; for fairseq
checkpoints, the same random weights renamed to fairseq's parameter names by a table written
here from fairseq's / unilm's module layout, which must give the HF-loaded features.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from softtok.tokenizers.features import build_featurizer  # noqa: E402

KINDS = ("hubert", "wavlm", "wav2vec2")
NUM_LAYERS = 2
TINY = dict(hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2, intermediate_size=64,
            conv_dim=(48, 48), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4)
LARGE = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)  # large-model layout
HF_CLASSES = {"hubert": ("HubertConfig", "HubertModel"), "wavlm": ("WavLMConfig", "WavLMModel"),
              "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model")}
ATOL = 1e-4


def make_hf(kind: str, large: bool, seed: int = 0, **overrides):
    """A seeded tiny transformers model with every parameter perturbed (so no weight sits at 0 or 1)."""
    cfg_cls, model_cls = (getattr(transformers, n) for n in HF_CLASSES[kind])
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**{**TINY, **(LARGE if large else {}), **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def wave(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g) + 0.02  # non-zero mean: normalisation matters


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{(kind, large): (dir, transformers model)} for all three kinds, base and large layouts."""
    out = {}
    for kind in KINDS:
        for large in (False, True):
            model = make_hf(kind, large)
            d = tmp_path_factory.mktemp(f"{kind}_{'large' if large else 'base'}")
            model.save_pretrained(d)
            out[kind, large] = (d, model)
    return out


def hf_reference(model, x: torch.Tensor):
    """transformers' hidden_states and the raw output of every encoder layer (forward hooks)."""
    raw = []
    hooks = [layer.register_forward_hook(lambda m, i, o: raw.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.encoder.layers]
    with torch.no_grad():
        hidden = model(x[None], output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    return [h[0] for h in hidden], [r[0] for r in raw]


# ---------------------------------------------------------------- HF format vs transformers


@pytest.mark.parametrize("large", [False, True], ids=["base", "large"])
@pytest.mark.parametrize("kind", KINDS)
def test_hf_dir_matches_transformers_hidden_states(hf_dirs, kind, large):
    d, model = hf_dirs[kind, large]
    x = wave(4000, seed=1)
    feats = {n: build_featurizer(kind, checkpoint=str(d), layer=n, device="cpu") for n in (1, 2)}
    assert feats[1].normalize == large  # no preprocessor_config.json: normalise layer-norm extractors only
    hidden, raw = hf_reference(model, F.layer_norm(x, x.shape) if large else x)
    for n, feat in feats.items():
        out = feat(x)
        assert out.dtype == torch.float32 and out.shape == (399, 32) and feat.dim == 32
        # hidden_states[N] is layer N's output, except the last one of layer-norm-first (large)
        # models in transformers < 5, which has the encoder's final layer_norm applied (5.x records
        # raw layer outputs): there only the hooked raw layer output is comparable.
        torch.testing.assert_close(out, raw[n - 1], atol=ATOL, rtol=0)
        if not (large and n == NUM_LAYERS):
            torch.testing.assert_close(out, hidden[n], atol=ATOL, rtol=0)


def test_preprocessor_config_decides_normalisation(tmp_path, hf_dirs):
    model = make_hf("wav2vec2", large=False)
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    feat = build_featurizer("wav2vec2", checkpoint=str(tmp_path), layer=2, device="cpu")
    assert feat.normalize
    x = wave(3000, seed=2)
    torch.testing.assert_close(feat(x), hf_reference(model, F.layer_norm(x, x.shape))[0][2], atol=ATOL, rtol=0)
    large_dir = hf_dirs["hubert", True][0]
    (large_dir / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    try:
        assert not build_featurizer("hubert", checkpoint=str(large_dir), layer=1, device="cpu").normalize
    finally:
        (large_dir / "preprocessor_config.json").unlink()


def test_hf_hubert_without_feature_projection_layer_norm(tmp_path):
    model = make_hf("hubert", large=False, seed=13, feat_proj_layer_norm=False)
    model.save_pretrained(tmp_path)
    x = wave(2000, seed=14)
    feat = build_featurizer("hubert", checkpoint=str(tmp_path), layer=1, device="cpu")
    torch.testing.assert_close(feat(x), hf_reference(model, x)[0][1], atol=ATOL, rtol=0)


def test_hf_bin_with_legacy_weight_norm_and_model_prefix(tmp_path):
    """pytorch_model.bin, ``weight_g``/``weight_v`` names and a ``wav2vec2.`` prefix (ForCTC-style dir)."""
    model = make_hf("wav2vec2", large=True, seed=3)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = {}
    for k, v in model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                 "weight_v")
        state["wav2vec2." + k] = v
    state["lm_head.weight"], state["lm_head.bias"] = torch.randn(5, 32), torch.randn(5)
    torch.save(state, tmp_path / "pytorch_model.bin")
    x = wave(2000, seed=4)
    feat = build_featurizer("wav2vec2", checkpoint=str(tmp_path), layer=1, device="cpu")
    torch.testing.assert_close(feat(x), hf_reference(model, F.layer_norm(x, x.shape))[0][1], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- fairseq / unilm format

_L = r"encoder\.layers\.(\d+)\."
HF_TO_FAIRSEQ = [  # transformers name -> fairseq (wav2vec2.py / hubert.py) or unilm WavLM.py name
    (r"masked_spec_embed", "mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(\w+)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_projection\.layer_norm\.(\w+)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(\w+)", r"post_extract_proj.\1"),
    (r"encoder\.pos_conv_embed\.conv\.(parametrizations\.weight\.original0|weight_g)", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.(parametrizations\.weight\.original1|weight_v)", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.layer_norm\.(\w+)", r"encoder.layer_norm.\1"),
    (_L + r"attention\.(q|k|v|out)_proj\.(\w+)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (_L + r"attention\.rel_attn_embed\.weight", r"encoder.layers.\1.self_attn.relative_attention_bias.weight"),
    (_L + r"attention\.gru_rel_pos_linear\.(\w+)", r"encoder.layers.\1.self_attn.grep_linear.\2"),
    (_L + r"attention\.gru_rel_pos_const", r"encoder.layers.\1.self_attn.grep_a"),
    (_L + r"layer_norm\.(\w+)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (_L + r"feed_forward\.intermediate_dense\.(\w+)", r"encoder.layers.\1.fc1.\2"),
    (_L + r"feed_forward\.output_dense\.(\w+)", r"encoder.layers.\1.fc2.\2"),
    (_L + r"final_layer_norm\.(\w+)", r"encoder.layers.\1.final_layer_norm.\2"),
]


def to_fairseq_state(model, kind: str, large: bool):
    """The HF model's weights under fairseq names, plus the pre-training heads loading must skip."""
    out = {}
    for key, value in model.state_dict().items():
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(\w+)", key)
        if m:  # layer_norm mode: Sequential(TransposeLast, LayerNorm, TransposeLast) at 2; default: GroupNorm at 2
            out[f"feature_extractor.conv_layers.{m[1]}.2{'.1' if large else ''}.{m[2]}"] = value
            continue
        for pattern, repl in HF_TO_FAIRSEQ:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise AssertionError(f"no fairseq name for {key}")
    if kind == "hubert":
        out.update({"label_embs_concat": torch.randn(504, 16), "final_proj.weight": torch.randn(16, 32),
                    "final_proj.bias": torch.randn(16)})
    if kind == "wav2vec2":
        out.update({"quantizer.vars": torch.randn(1, 640, 8), "quantizer.weight_proj.weight": torch.randn(640, 48),
                    "quantizer.weight_proj.bias": torch.randn(640), "project_q.weight": torch.randn(16, 16),
                    "project_q.bias": torch.randn(16), "final_proj.weight": torch.randn(16, 32),
                    "final_proj.bias": torch.randn(16)})
    return out


def fairseq_model_cfg(kind: str, large: bool, conv_dim: int = 48):
    """A fairseq model config as stored in released checkpoints (dropouts, masking and all)."""
    cfg = {"_name": kind, "extractor_mode": "layer_norm" if large else "default",
           "conv_feature_layers": f"[({conv_dim}, 10, 5)] + [({conv_dim}, 3, 2)] * 1", "conv_bias": large,
           "encoder_layers": NUM_LAYERS, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
           "encoder_attention_heads": 2, "activation_fn": "gelu", "layer_norm_first": large, "conv_pos": 16,
           "conv_pos_groups": 4, "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
           "encoder_layerdrop": 0.05, "dropout_input": 0.1, "dropout_features": 0.1, "final_dim": 16,
           "feature_grad_mult": 0.1, "mask_prob": 0.8, "mask_length": 10, "mask_selection": "static"}
    if kind == "hubert":
        cfg.update(label_rate=50.0, untie_final_proj=False, skip_masked=False, skip_nomask=False, logit_temp=0.1)
    if kind == "wav2vec2":
        cfg.update(quantize_targets=True, latent_vars=320, latent_groups=2, layer_type="transformer",
                   pos_conv_depth=1, quantize_input=False)
    return cfg


def fairseq_checkpoint(model, kind: str, large: bool):
    """fairseq ``{"cfg": {"model", "task"}, "model"}``; unilm WavLM: one flat ``cfg``."""
    state = to_fairseq_state(model, kind, large)
    model_cfg = fairseq_model_cfg(kind, large)
    if kind == "wavlm":
        del model_cfg["_name"]
        cfg = {**model_cfg, "normalize": large, "relative_position_embedding": True, "num_buckets": 320,
               "max_distance": 800, "gru_rel_pos": True}
        return {"cfg": cfg, "model": state}
    task = {"_name": f"{'hubert' if kind == 'hubert' else 'audio'}_pretraining", "data": "/data/manifest",
            "normalize": large, "sample_rate": 16000, "max_sample_size": 250000, "labels": ["km"]}
    return {"args": None, "cfg": {"_name": None, "common": {"seed": 1}, "model": model_cfg, "task": task},
            "model": state, "optimizer_history": [{"num_updates": 400000}], "extra_state": {"epoch": 10}}


@pytest.mark.parametrize("large", [False, True], ids=["base", "large"])
@pytest.mark.parametrize("kind", KINDS)
def test_fairseq_checkpoint_matches_hf(hf_dirs, tmp_path, kind, large):
    d, model = hf_dirs[kind, large]
    ckpt = tmp_path / f"{kind}.pt"
    torch.save(fairseq_checkpoint(model, kind, large), ckpt)
    x = wave(4000, seed=5)
    for n in (1, 2):
        ours = build_featurizer(kind, checkpoint=str(ckpt), layer=n, device="cpu")
        ref = build_featurizer(kind, checkpoint=str(d), layer=n, device="cpu")
        assert ours.normalize == ref.normalize == large and ours.dim == ref.dim
        torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=0)
    assert ours.spec()["checkpoint"] == str(ckpt.resolve())


def test_fairseq_without_post_extract_proj(tmp_path):
    """fairseq drops post_extract_proj when conv dim == embed dim: the projection is the identity."""
    model = make_hf("hubert", large=False, seed=6, conv_dim=(32, 32))
    with torch.no_grad():
        model.feature_projection.projection.weight.copy_(torch.eye(32))
        model.feature_projection.projection.bias.zero_()
    state = {k: v for k, v in to_fairseq_state(model, "hubert", False).items() if "post_extract_proj" not in k}
    cfg = {"model": fairseq_model_cfg("hubert", False, conv_dim=32), "task": {"normalize": False}}
    torch.save({"cfg": cfg, "model": state}, tmp_path / "h.pt")
    x = wave(3000, seed=7)
    feat = build_featurizer("hubert", checkpoint=str(tmp_path / "h.pt"), layer=2, device="cpu")
    torch.testing.assert_close(feat(x), hf_reference(model, x)[0][2], atol=ATOL, rtol=0)


def test_fairseq_finetuned_ctc_checkpoint(hf_dirs, tmp_path):
    """wav2vec_ctc: the pre-trained config in ``w2v_args``, weights under ``w2v_encoder.w2v_model.``."""
    d, model = hf_dirs["wav2vec2", True]
    pre = fairseq_checkpoint(model, "wav2vec2", True)
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in pre["model"].items()}
    state.update({"w2v_encoder.proj.weight": torch.randn(30, 32), "w2v_encoder.proj.bias": torch.randn(30)})
    cfg = {"model": {"_name": "wav2vec_ctc", "w2v_path": "/x/w2v.pt", "w2v_args": pre["cfg"]},
           "task": {"_name": "audio_finetuning", "normalize": True}}
    torch.save({"cfg": cfg, "model": state}, tmp_path / "ctc.pt")
    x = wave(2500, seed=8)
    ours = build_featurizer("wav2vec2", checkpoint=str(tmp_path / "ctc.pt"), layer=2, device="cpu")
    torch.testing.assert_close(ours(x), build_featurizer("wav2vec2", checkpoint=str(d), layer=2, device="cpu")(x),
                               atol=ATOL, rtol=0)


class FakeMeter:
    """Pickled under a fairseq module name that does not exist at load time."""

    def __init__(self):
        self.avg = 1.5


def test_legacy_args_checkpoint_with_unimportable_classes(hf_dirs, tmp_path, monkeypatch, caplog):
    """Old fairseq: ``args`` Namespace (model + task options) and fairseq objects in extra_state."""
    d, model = hf_dirs["wav2vec2", False]
    args = argparse.Namespace(arch="wav2vec2", task="audio_pretraining", normalize=False,
                              **{k: v for k, v in fairseq_model_cfg("wav2vec2", False).items() if k != "_name"})
    names = ("fairseq", "fairseq.logging", "fairseq.logging.meters")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[names[-1]].FakeMeter = FakeMeter
    monkeypatch.setattr(FakeMeter, "__module__", names[-1])
    torch.save({"args": args, "model": to_fairseq_state(model, "wav2vec2", False),
                "extra_state": {"metrics": FakeMeter()}}, tmp_path / "old.pt")
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    x = wave(3000, seed=9)
    ours = build_featurizer("wav2vec2", checkpoint=str(tmp_path / "old.pt"), layer=1, device="cpu")
    assert "only use checkpoints you trust" in caplog.text
    torch.testing.assert_close(ours(x), build_featurizer("wav2vec2", checkpoint=str(d), layer=1, device="cpu")(x),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("hide_omegaconf", [False, True], ids=["omegaconf", "no-omegaconf"])
def test_omegaconf_cfg(hf_dirs, tmp_path, monkeypatch, hide_omegaconf):
    """cfg pickled as an omegaconf DictConfig loads with omegaconf, and without it (stub classes)."""
    omegaconf = pytest.importorskip("omegaconf")
    d, model = hf_dirs["hubert", True]
    ckpt = fairseq_checkpoint(model, "hubert", True)
    ckpt["cfg"] = omegaconf.OmegaConf.create(ckpt["cfg"])
    torch.save(ckpt, tmp_path / "h.pt")
    if hide_omegaconf:
        for name in [m for m in sys.modules if m == "omegaconf" or m.startswith("omegaconf.")]:
            monkeypatch.setitem(sys.modules, name, None)
    ours = build_featurizer("hubert", checkpoint=str(tmp_path / "h.pt"), layer=2, device="cpu")
    assert ours.normalize
    x = wave(2000, seed=10)
    torch.testing.assert_close(ours(x), build_featurizer("hubert", checkpoint=str(d), layer=2, device="cpu")(x),
                               atol=ATOL, rtol=0)


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize("kind", KINDS)
def test_padded_batch_equals_one_at_a_time(hf_dirs, kind):
    feat = build_featurizer(kind, checkpoint=str(hf_dirs[kind, True][0]), layer=2, device="cpu")
    assert feat.padded_batches
    waves = [wave(n, seed=i) for i, n in enumerate((4000, 2500, 12, 3333, 640))]
    batched = feat.batch(waves)
    assert [b.shape[0] for b in batched] == [feat.num_frames(w.numel()) for w in waves] == [399, 249, 0, 332, 63]
    for b, w in zip(batched, waves):
        torch.testing.assert_close(b, feat(w), atol=ATOL, rtol=0)


def test_group_norm_models_are_not_padded(hf_dirs):
    """Padding changes a group-norm extractor's output, so batch() runs those one at a time."""
    feat = build_featurizer("hubert", checkpoint=str(hf_dirs["hubert", False][0]), layer=1, device="cpu")
    assert not feat.padded_batches
    waves = [wave(4000, seed=11), wave(2000, seed=12)]
    single = [feat(w) for w in waves]
    assert all(torch.equal(b, s) for b, s in zip(feat.batch(waves), single))
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.inference_mode():
        out, frames = feat._forward(padded, torch.tensor([4000, 2000]))
    assert (out[1, : int(frames[1])] - single[1]).abs().max() > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(hf_dirs, kind):
    d = str(hf_dirs[kind, True][0])
    cpu, gpu = (build_featurizer(kind, checkpoint=d, layer=2, device=dev) for dev in ("cpu", "cuda"))
    waves = [wave(4000, seed=15), wave(2222, seed=16)]
    for a, b in zip(gpu.batch(waves), [cpu(w) for w in waves]):
        assert a.device.type == "cpu" and a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)  # TF32 / kernel differences


# ---------------------------------------------------------------- spec, registry, errors


def test_spec_and_frame_rate(hf_dirs):
    d = hf_dirs["wavlm", False][0]
    feat = build_featurizer("wavlm", checkpoint=str(d), layer=2, device="cpu")
    assert feat.spec() == {"feature": "wavlm", "dim": 32, "frame_rate": 1600.0, "layer": 2,
                           "checkpoint": str(d.resolve())}  # tiny model: stride 10 (real models: 320 -> 50/s)
    assert len(feat.model.encoder.transformer.layers) == 2


def test_bad_checkpoints_and_layers(hf_dirs, tmp_path):
    d = hf_dirs["hubert", False][0]
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_featurizer("hubert", checkpoint=str(tmp_path / "nope.pt"))
    for layer in (0, 3):
        with pytest.raises(ValueError, match=rf"layer {layer} out of range 1\.\.2 for .*{d.name}"):
            build_featurizer("hubert", checkpoint=str(d), layer=layer, device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: not a PyTorch checkpoint"):
        build_featurizer("hubert", checkpoint=str(tmp_path / "junk.pt"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a fairseq/unilm checkpoint"):
        build_featurizer("hubert", checkpoint=str(tmp_path / "other.pt"))
    torch.save({"cfg": {"model": fairseq_model_cfg("hubert", False), "task": {}}, "model": {}}, tmp_path / "e.pt")
    with pytest.raises(ValueError, match=r"e\.pt: weights do not fit"):
        build_featurizer("hubert", checkpoint=str(tmp_path / "e.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a Hugging Face model dir"):
        build_featurizer("hubert", checkpoint=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="holds a hubert model, not wavlm"):
        build_featurizer("wavlm", checkpoint=str(d))
    with pytest.raises(ValueError, match="needs a checkpoint"):
        build_featurizer("wav2vec2")
    with pytest.raises(ValueError, match="mono"):
        build_featurizer("hubert", checkpoint=str(d), layer=1, device="cpu")(torch.zeros(2, 4000))


def test_unsupported_variants_are_named(tmp_path):
    cfg = {**fairseq_model_cfg("wav2vec2", True), "layer_type": "conformer"}
    torch.save({"cfg": {"model": cfg, "task": {}}, "model": {"mask_emb": torch.zeros(32)}}, tmp_path / "c.pt")
    with pytest.raises(NotImplementedError, match="layer_type='conformer'"):
        build_featurizer("wav2vec2", checkpoint=str(tmp_path / "c.pt"))
