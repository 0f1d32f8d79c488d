"""The analysis subcommands end to end on synthetic features: phone CTC training, align, analyze tokens | rankme."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from softtok.analysis.metrics import Contingency, purity_pnmi, rankme, separability
from softtok.cli import main
from softtok.downstream.asr.train import build_model, train
from softtok.tokenizers.datadir import read_kaldi_map, write_kaldi_map
from softtok.tokenizers.fileio import ArkScpWriter, iter_scp, load_yaml, save_yaml
from softtok.tokenizers.kmeans import Codebook, learn_kmeans

PHONES = ["AA", "B", "K", "S"]
DIM, FRAMES_PER_PHONE = 8, 5
TINY_ENCODER = {"output_size": 16, "attention_heads": 2, "linear_units": 32, "cgmlp_linear_units": 32,
                "num_blocks": 1, "input_layer": "linear", "cgmlp_conv_kernel": 3, "merge_conv_kernel": 3}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """feats.scp (+ feats.yaml) of 8 utterances whose frames sit around one mean per phone, phone text, frame labels."""
    root = tmp_path_factory.mktemp("synth")
    g = np.random.default_rng(0)
    means = {p: 4.0 * g.normal(size=DIM) for p in PHONES}
    phones, frame_labels = {}, {}
    (root / "feats").mkdir()
    with ArkScpWriter(root / "feats" / "feats.ark", root / "feats" / "feats.scp") as w:
        for i in range(8):
            seq = [PHONES[j] for j in g.integers(0, len(PHONES), size=6)]
            labels = ["sil"] * 3 + [p for p in seq for _ in range(FRAMES_PER_PHONE)] + ["sil"] * 3
            x = np.stack([means.get(p, np.zeros(DIM)) + g.normal(size=DIM) for p in labels]).astype(np.float32)
            w.write(f"utt{i}", x)
            phones[f"utt{i}"], frame_labels[f"utt{i}"] = " ".join(seq), " ".join(labels)
    save_yaml(root / "feats" / "feats.yaml", {"feature": "synthetic", "dim": DIM, "frame_rate": 50.0})
    write_kaldi_map(root / "phones", phones)
    write_kaldi_map(root / "frame_labels", frame_labels)
    return root


def collapse(seq):
    """Runs of equal labels as one."""
    return [p for i, p in enumerate(seq) if i == 0 or p != seq[i - 1]]


def _phone_config(path: Path) -> str:
    save_yaml(path, {"token_type": "phone", "max_epoch": 2, "batch_frames": 200, "warmup_steps": 2, "keep_nbest": 1,
                     "model": {"embed_dim": 16, "encoder": "e_branchformer", "encoder_conf": TINY_ENCODER,
                               "ctc_weight": 1.0, "masking_conf": {"num_time_masks": 0, "num_channel_masks": 0}}})
    return str(path)


def _model_dir(path: Path, **config) -> Path:
    """An experiment dir with a random TokenASR (config.yaml + model.pth), as train would leave it."""
    config = {"token_list": ["<blank>", "<unk>", "A", "<sos/eos>"], "head": "hard", "head_conf": {},
              "model": {"embed_dim": 6, "encoder_conf": {"output_size": 8, "attention_heads": 2, "linear_units": 8,
                                                         "num_blocks": 1, "input_layer": "linear"},
                        "ctc_weight": 1.0}, **config}
    path.mkdir(parents=True)
    save_yaml(path / "config.yaml", config)
    torch.manual_seed(0)
    torch.save(build_model(config).state_dict(), path / "model.pth")
    return path


def test_phone_ctc_train_then_align(synth, tmp_path):
    feats, exp = str(synth / "feats" / "feats.scp"), tmp_path / "phone_ctc"
    train(_phone_config(tmp_path / "conf.yaml"), feats, str(synth / "phones"), feats, str(synth / "phones"),
          str(exp), head="continuous", device="cpu")
    config = load_yaml(exp / "config.yaml")
    assert config["token_type"] == "phone" and config["token_list"][2:-1] == PHONES
    out = tmp_path / "align"
    assert main(["align", "--exp-dir", str(exp), "--feats", feats, "--phone-text", str(synth / "phones"),
                 "--out-dir", str(out)]) == 0
    labels, truth = read_kaldi_map(out / "phones.txt"), read_kaldi_map(synth / "frame_labels")
    assert set(labels) == set(truth)
    for utt, line in labels.items():
        assert len(line.split()) == len(truth[utt].split())  # one label per feature frame
        phones = read_kaldi_map(synth / "phones")[utt].split()
        assert collapse([p for p in line.split() if p != "sil"]) == collapse(phones)  # the phones, in order
    meta = load_yaml(out / "align.yaml")
    assert meta["frame_rate"] == 50.0 and meta["align_frame_rate"] == 50.0 and meta["failed"] == []
    assert main(["align", "--exp-dir", str(_model_dir(tmp_path / "char", head="continuous", feat_dim=DIM)),
                 "--feats", feats, "--phone-text", str(synth / "phones"), "--out-dir", str(tmp_path / "x")]) == 1


@pytest.fixture(scope="module")
def models(synth, tmp_path_factory):
    """A K=6 codebook with a hard-token model over it and a continuous-input model (random weights)."""
    root = tmp_path_factory.mktemp("models")
    frames = np.concatenate([m for _, m in iter_scp(synth / "feats" / "feats.scp")])
    codebook = learn_kmeans(frames, 6, backend="sklearn", n_init=1)
    codebook.save(root / "km.npy")
    hard = _model_dir(root / "asr_hard_k6", n_tokens=6, kmeans=str(root / "km.npy"))
    save_yaml(hard / "tau_sweep.yaml", {"best": {"tau": 2.5}})
    cont = _model_dir(root / "asr_continuous", head="continuous", feat_dim=DIM)
    return {"codebook": root / "km.npy", "hard": hard, "continuous": cont, "frames": frames}


def _truth(synth):
    labels = {u: v.split() for u, v in read_kaldi_map(synth / "frame_labels").items()}
    mats = dict(iter_scp(synth / "feats" / "feats.scp"))
    inventory = sorted({p for v in labels.values() for p in v})
    x = np.concatenate([mats[u] for u in sorted(mats)])
    y = np.concatenate([[inventory.index(p) for p in labels[u]] for u in sorted(mats)])
    return x, y, inventory


def test_analyze_tokens_report(synth, models, tmp_path):
    out = tmp_path / "an"
    argv = ["analyze", "tokens", "--feats", str(synth / "feats" / "feats.scp"), "--labels",
            str(synth / "frame_labels"), "--models", str(models["hard"]), "--continuous-model",
            str(models["continuous"]), "--out-dir", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "analysis.json").read_text())
    x, y, inventory = _truth(synth)
    assert res["phones"] == len(inventory) == 5 and res["frames"] == len(y)
    feats_row = res["continuous"][0]
    assert feats_row["ratio"] == pytest.approx(separability(x, y, 5)["ratio"], rel=1e-6) and feats_row["ratio"] > 3
    assert feats_row["rankme"] == pytest.approx(rankme(x), rel=1e-5)
    tok = res["tokens"][0]
    assert tok["K"] == 6 and tok["tau"] == 2.5 and res["continuous"][1]["dim"] == 6
    codebook = Codebook.load(models["codebook"])
    joint = Contingency(5, 6)
    joint.update(y, ids=codebook.assign(torch.from_numpy(x)))
    for key, value in purity_pnmi(joint.counts).items():
        assert tok["purity"]["hard"][key] == pytest.approx(value, rel=1e-9), key
    assert tok["purity"]["soft"]["pnmi"] < tok["purity"]["hard"]["pnmi"]  # soft spreads mass over tokens
    md = (out / "ANALYSIS.md").read_text()
    assert "| soft K=6 τ=2.5 | asr_hard_k6 |" in md and "| 6 | hard | – |" in md
    for png in ("separability.png", "purity.png"):
        assert (out / png).stat().st_size > 1000
    # τ → 0: the soft input is the hard one
    assert main(argv[:-2] + ["--taus", "1e-9", "--exclude", "sil", "--out-dir", str(tmp_path / "tiny")]) == 0
    tiny = json.loads((tmp_path / "tiny" / "analysis.json").read_text())
    hard_in, soft_in = tiny["tokens"][0]["inputs"]["hard"], tiny["tokens"][0]["inputs"]["soft"]
    assert soft_in["ratio"] == pytest.approx(hard_in["ratio"], rel=1e-5)
    assert tiny["phones"] == 4 and tiny["excluded_frames"] == 8 * 6


def test_analyze_tokens_rejects_misaligned_labels(synth, models, tmp_path):
    bad = read_kaldi_map(synth / "frame_labels")
    bad["utt3"] += " sil"
    write_kaldi_map(tmp_path / "labels", bad)
    assert main(["analyze", "tokens", "--feats", str(synth / "feats" / "feats.scp"), "--labels",
                 str(tmp_path / "labels"), "--out-dir", str(tmp_path / "o")]) == 1
    from softtok.analysis.tokens import analyze_tokens
    from softtok.tokenizers.datadir import DataError

    with pytest.raises(DataError, match="'utt3' has 37 labels for 36 feature frames"):
        analyze_tokens(str(synth / "feats" / "feats.scp"), str(tmp_path / "labels"))


def test_rankme_per_layer_matches_layer_features(tmp_path, tone_dir):
    pytest.importorskip("transformers")
    from test_ssl_features import make_hf

    from softtok.tokenizers.audio import read_utterance
    from softtok.tokenizers.datadir import load_data_dir
    from softtok.tokenizers.features import build_featurizer

    make_hf("hubert", large=False).save_pretrained(tmp_path / "hubert")
    out = tmp_path / "rk"
    assert main(["analyze", "rankme", "--data-dir", str(tone_dir), "--feature", "hubert", "--checkpoint",
                 str(tmp_path / "hubert"), "--device", "cpu", "--out-dir", str(out)]) == 0
    rows = json.loads((out / "rankme.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == [1, 2]
    data = load_data_dir(tone_dir)
    for r in rows:  # each layer's RankMe equals that of the --layer N features
        feat = build_featurizer("hubert", checkpoint=str(tmp_path / "hubert"), layer=r["layer"], device="cpu")
        x = torch.cat([feat(read_utterance(data, u)) for u in data.utt_ids])
        assert r["rankme"] == pytest.approx(rankme(x), rel=1e-4) and r["frames"] == len(x)
    assert (out / "rankme.png").stat().st_size > 1000 and "| 2 |" in (out / "RANKME.md").read_text()
    assert main(["analyze", "rankme", "--out-dir", str(out)]) == 1  # neither --feats nor --data-dir


def test_rankme_skips_a_feature_without_layers(tmp_path, tone_dir, caplog):
    """The recipes' RankMe stage runs for every feature: one without encoder layers (mfcc) is a skip line."""
    out = tmp_path / "rk"
    assert main(["analyze", "rankme", "--data-dir", str(tone_dir), "--feature", "mfcc", "--out-dir", str(out)]) == 0
    assert "skipped=feature 'mfcc' has no encoder layers" in caplog.text and not out.exists()
    caplog.clear()
    assert main(["analyze", "rankme", "--data-dir", str(tone_dir), "--feature", "mfc", "--out-dir", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "unknown feature 'mfc'" in errors[0]
