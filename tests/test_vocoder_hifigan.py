"""The HiFi-GAN unit vocoder: input forms, output length, CPU smoke train/resume/synthesis, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import REPO, write_wave
from softtok.downstream.vocoder.hifigan import HOP, UnitHiFiGAN, WaveVocoderData, main, synthesize, train
from softtok.downstream.vocoder.mel import inference_head
from softtok.tokenizers.datadir import write_data_dir
from softtok.tokenizers.fileio import ArkScpWriter
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.heads import TokenInput
from test_vocoder_mel import DIM, K, _one_line, toy  # noqa: F401  (shared fixtures: tones + features)

SMOKE = REPO / "egs" / "piper_joe" / "voc" / "conf" / "hifigan_smoke.yaml"
GPU = REPO / "egs" / "piper_joe" / "voc" / "conf" / "hifigan_gpu.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kind) -> UnitHiFiGAN:
    torch.manual_seed(0)
    return UnitHiFiGAN(**kind, **yaml.safe_load(SMOKE.read_text())["model"]).eval()


def _checkpoints(exp: Path):
    return {p.name: p.stat().st_mtime_ns for p in (exp / "checkpoints").glob("epoch*.pth")}


@pytest.fixture(scope="module")
def trained(toy):
    exp = toy["root"] / "exp_hifigan_hard"
    summary = train(str(SMOKE), toy["feats"], toy["data"], str(exp), head="hard", kmeans=toy["kmeans"], device="cpu")
    return exp, summary


def test_input_forms_agree_and_length_is_320_per_frame():
    model = _tiny(n_tokens=K)
    ids = torch.randint(0, K, (2, 7))
    with torch.no_grad():
        hard = model(TokenInput("ids", ids=ids[..., None]))
        probs = model(TokenInput("probs", probs=torch.nn.functional.one_hot(ids, K).float()[..., None, :]))
        top1 = model(TokenInput("topk", ids=ids[..., None, None], weights=torch.ones(2, 7, 1, 1)))
        cont = _tiny(feat_dim=DIM)(TokenInput("feats", feats=torch.randn(1, 5, DIM)))
    assert hard.shape == (2, 7 * HOP) and cont.shape == (1, 5 * HOP)
    torch.testing.assert_close(probs, hard, atol=1e-6, rtol=0)
    torch.testing.assert_close(top1, hard, atol=1e-6, rtol=0)
    assert hard.abs().max() <= 1.0


def test_gpu_config_builds_a_v1_sized_generator():
    conf = yaml.safe_load(GPU.read_text())
    model = UnitHiFiGAN(n_tokens=K, **conf["model"])
    n_params = sum(p.numel() for p in model.generator.parameters())
    assert 12e6 < n_params < 15e6  # HiFi-GAN V1: 13.9M
    with torch.no_grad():
        assert model(TokenInput("ids", ids=torch.zeros(1, 2, 1, dtype=torch.long))).shape == (1, 2 * HOP)


def test_smoke_train_resume_synthesize(toy, trained, tmp_path):
    exp, summary = trained
    history = yaml.safe_load((exp / "history.yaml").read_text())["history"]
    assert summary["epochs"] == 1 and len(history) == 1 and history[0]["train_steps"] == 2
    assert np.isfinite(history[0]["valid_loss"]) and np.isfinite(history[0]["train_g_loss"])
    state = torch.load(exp / "checkpoints" / "epoch1.pth", weights_only=False)
    assert set(state["extra"]) == {"discriminator", "optimizer_d", "scheduler_d"} and "scheduler" in state
    model_state = torch.load(exp / "model.pth", weights_only=True)
    assert all(k.startswith(("embedding.", "generator.")) for k in model_state)
    before = _checkpoints(exp)
    rc = main(["train", "--config", str(SMOKE), "--feats", toy["feats"], "--data-dir", toy["data"],
               "--kmeans", toy["kmeans"], "--head", "hard", "--exp-dir", str(exp), "--device", "cpu"])
    assert rc == 0 and _checkpoints(exp) == before  # resumed, nothing re-trained
    assert "resumed from" in (exp / "train.log").read_text()
    train(str(SMOKE), toy["feats"], toy["data"], str(exp), head="hard", kmeans=toy["kmeans"],
          overrides={"max_epoch": 2}, device="cpu")
    after = _checkpoints(exp)
    assert set(after) - set(before) == {"epoch2.pth"} and all(after[k] == v for k, v in before.items())
    for head, conf in [("hard", {}), ("soft", {"tau": 1.0}), ("soft", {"tau": 1.0, "top_k": 2})]:
        out = tmp_path / f"synth_{head}_{len(conf)}"
        assert synthesize(str(exp), toy["feats"], str(out), head, conf)["utterances"] == 6
        scp = dict(line.split(maxsplit=1) for line in (out / "wav.scp").read_text().splitlines())
        wave, sr = sf.read(scp["utt0"])
        assert sr == 16000 and wave.shape == (50 * HOP,)
        assert yaml.safe_load((out / "synth.yaml").read_text())["head"] == head
        assert not list(out.rglob("*.tmp.*"))
    assert main(["synthesize", "--exp-dir", str(exp), "--feats", toy["feats"], "--out-dir", str(tmp_path / "cli")]) == 0


def test_bad_inputs(toy, trained, tmp_path):
    model = _tiny(n_tokens=K)
    with pytest.raises(ValueError) as e:
        model(TokenInput("probs", probs=torch.full((1, 3, 1, K + 1), 0.2)))
    _one_line(e, "K=5", "K=4")
    with pytest.raises(ValueError) as e:
        model(TokenInput("ids", ids=torch.zeros(1, 0, 1, dtype=torch.long)))
    _one_line(e, "empty token sequence")
    with pytest.raises(ValueError) as e:
        UnitHiFiGAN(n_tokens=K, channels=16, upsample_scales=[8, 8, 4])
    _one_line(e, "multiply to 256", "320")
    exp, _ = trained
    config = yaml.safe_load((exp / "config.yaml").read_text())
    wrong_k = tmp_path / "k3.npy"
    Codebook(toy["centroids"][:3]).save(wrong_k)
    with pytest.raises(ValueError) as e:
        inference_head(config, "soft", {"tau": 1.0}, str(wrong_k))
    _one_line(e, "K=3", "K=4")
    with ArkScpWriter(tmp_path / "e.ark", tmp_path / "e.scp") as writer:
        writer.write("utt0", np.zeros((0, DIM), np.float32))
    with pytest.raises(ValueError) as e:
        synthesize(str(exp), str(tmp_path / "e.scp"), str(tmp_path / "e_out"))
    _one_line(e, "'utt0'", "empty token sequence")
    # training audio recorded at 8 kHz (upsampled on read) is refused, as is reading at another rate
    write_wave(tmp_path / "a8k.wav", 0.1 * np.sin(2 * np.pi * 220 * np.arange(8000) / 8000), sr=8000)
    data8k = write_data_dir(tmp_path / "data8k", {"utt0": str(tmp_path / "a8k.wav")})
    with ArkScpWriter(tmp_path / "f.ark", tmp_path / "f.scp") as writer:
        writer.write("utt0", np.zeros((50, DIM), np.float32))
    with pytest.raises(ValueError) as e:
        WaveVocoderData(str(tmp_path / "f.scp"), str(data8k))
    _one_line(e, "'utt0'", "8000 Hz", "16000 Hz")
    with pytest.raises(ValueError) as e:
        WaveVocoderData(toy["feats"], toy["data"], sample_rate=22050)
    _one_line(e, "sample rate", "16000")
    assert main(["train", "--config", str(SMOKE), "--feats", str(tmp_path / "f.scp"), "--data-dir", str(data8k),
                 "--head", "continuous", "--exp-dir", str(tmp_path / "x"), "--device", "cpu"]) == 1
