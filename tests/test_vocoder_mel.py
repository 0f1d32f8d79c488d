"""The mel unit vocoder: input forms, training/resume, synthesis, Griffin-Lim round trip, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import write_wave
from softtok.downstream.vocoder import train as voc_train
from softtok.downstream.vocoder.mel import (HOP_LENGTH, MelVocoder, MelVocoderData, griffin_lim, inference_head,
                                            log_mel, synthesize)
from softtok.downstream.vocoder.mel import main as synth_main
from softtok.tokenizers.datadir import write_data_dir
from softtok.tokenizers.fileio import ArkScpWriter
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.kmeans import Codebook

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
K, DIM = 4, 8
PITCH = (200.0, 300.0, 450.0, 650.0)  # Hz of each synthetic token
SMALL_MODEL = {"embed_dim": 32, "channels": 48, "n_layers": 2, "n_post_layers": 1, "kernel": 5, "dropout": 0.0}


def _harmonic(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vibrato harmonic tone with amplitude modulation and a little noise: a speech-like test signal."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 + 30 * np.sin(2 * np.pi * 0.5 * t)) / SR
    x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 30)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    x = x + 0.003 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Six 1 s utterances: 0.2 s tones whose pitch is set by a token id; features = centroid + noise (50 /s)."""
    root = tmp_path_factory.mktemp("melvoc")
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((K, DIM)).astype(np.float32) * 2
    codebook_path = root / "kmeans_k4.npy"
    Codebook(centroids).save(codebook_path)
    wav = {}
    with ArkScpWriter(root / "dump" / "feats.ark", root / "dump" / "feats.scp") as writer:
        for i in range(6):
            utt = f"utt{i}"
            ids = rng.integers(0, K, size=5)
            t = np.arange(int(0.2 * SR)) / SR
            audio = np.concatenate([0.3 * np.sin(2 * np.pi * PITCH[k] * t) for k in ids]).astype(np.float32)
            write_wave(root / "audio" / f"{utt}.wav", audio)
            wav[utt] = str(root / "audio" / f"{utt}.wav")
            frame_ids = np.repeat(ids, 10)  # 50 token frames per second
            writer.write(utt, centroids[frame_ids] + 0.1 * rng.standard_normal((50, DIM)).astype(np.float32))
    data = write_data_dir(root / "data", wav)
    config = root / "conf.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "max_epoch": 10, "batch_frames": 50, "lr": 5e-3, "num_threads": 1,
                                      "keep_nbest": 2, "model": SMALL_MODEL}))
    return {"root": root, "feats": str(root / "dump" / "feats.scp"), "data": str(data),
            "kmeans": str(codebook_path), "config": str(config), "centroids": centroids}


@pytest.fixture(scope="module")
def trained(toy):
    exp = toy["root"] / "exp_hard"
    summary = voc_train.train(toy["config"], toy["feats"], toy["data"], str(exp), head="hard",
                              kmeans=toy["kmeans"], device="cpu")
    return exp, summary


def _checkpoints(exp: Path):
    return {p.name: p.stat().st_mtime_ns for p in (exp / "checkpoints").glob("epoch*.pth")}


def test_input_forms_agree_and_length_is_twice():
    torch.manual_seed(0)
    model = MelVocoder(n_tokens=K, **SMALL_MODEL).eval()
    ids = torch.randint(0, K, (2, 7))
    lengths = torch.tensor([7, 5])
    hard, mel_len = model(TokenInput("ids", ids=ids[..., None]), lengths)
    probs, _ = model(TokenInput("probs", probs=torch.nn.functional.one_hot(ids, K).float()[..., None, :]), lengths)
    top1, _ = model(TokenInput("topk", ids=ids[..., None, None], weights=torch.ones(2, 7, 1, 1)), lengths)
    assert hard.shape == (2, 14, 80) and mel_len.tolist() == [14, 10]
    torch.testing.assert_close(probs, hard, atol=1e-5, rtol=0)
    torch.testing.assert_close(top1, hard, atol=1e-5, rtol=0)
    # padding does not leak: the short utterance alone gives the same mel as in the batch
    alone, _ = model(TokenInput("ids", ids=ids[1:, :5, None]), lengths[1:])
    torch.testing.assert_close(alone[0], hard[1, :10], atol=1e-5, rtol=0)
    assert hard[1, 10:].abs().max() == 0


def test_griffin_lim_round_trip_and_speed():
    """GL of a known signal's log-mel re-analyses to within 0.35 mean |Δ log-mel| (measured 0.19 at 32 iterations;
    spectral convergence 0.15); white noise of similar level is ~2.0 away, so the bound separates the two."""
    x = _harmonic(3.0)
    ref = log_mel(x)
    t0 = time.process_time()
    wave = griffin_lim(ref)
    cpu_seconds = time.process_time() - t0
    assert wave.ndim == 1 and abs(len(wave) - len(x)) <= 2 * HOP_LENGTH
    syn = log_mel(wave)
    n = min(len(ref), len(syn))
    diff = float((ref[:n] - syn[:n]).abs().mean())
    sc = float(torch.linalg.norm(ref[:n].exp() - syn[:n].exp()) / torch.linalg.norm(ref[:n].exp()))
    noise = log_mel(torch.from_numpy(np.random.default_rng(1).standard_normal(len(x)).astype(np.float32) * 0.1))
    assert diff < 0.35 and sc < 0.3, (diff, sc)
    assert float((ref - noise[:len(ref)]).abs().mean()) > 1.0
    assert cpu_seconds < 3.0  # 3 s of audio: ~0.2 s CPU on one thread


def test_train_reduces_loss_and_resumes(toy, trained):
    exp, summary = trained
    history = yaml.safe_load((exp / "history.yaml").read_text())["history"]
    assert len(history) == 10 and summary["epochs"] == 10
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (exp / "model.pth").is_file() and (exp / "train.log").is_file()
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["n_tokens"] == K and config["feat_dim"] is None and config["head"] == "hard"
    assert Path(config["kmeans"]).is_file() and config["model"] == SMALL_MODEL
    before = _checkpoints(exp)
    assert set(before) == {f"epoch{i}.pth" for i in range(1, 11)}
    voc_train.train(toy["config"], toy["feats"], toy["data"], str(exp), head="hard", kmeans=toy["kmeans"],
                    device="cpu")
    assert _checkpoints(exp) == before  # nothing re-trained
    rc = voc_train.main(["--config", toy["config"], "--feats", toy["feats"], "--data-dir", toy["data"],
                         "--kmeans", toy["kmeans"], "--head", "hard", "--exp-dir", str(exp), "--device", "cpu",
                         "--override", "{max_epoch: 11}"])
    after = _checkpoints(exp)
    assert rc == 0 and set(after) - set(before) == {"epoch11.pth"}
    assert all(after[k] == v for k, v in before.items())
    assert len(yaml.safe_load((exp / "history.yaml").read_text())["history"]) == 11


@pytest.mark.parametrize("head,conf", [("hard", {}), ("soft", {"tau": 1.0}), ("soft", {"tau": 1.0, "top_k": 2})])
def test_synthesize_writes_16k_wavs(toy, trained, tmp_path, head, conf):
    exp, _ = trained
    out = tmp_path / "synth"
    summary = synthesize(str(exp), toy["feats"], str(out), head, conf)
    assert summary["utterances"] == 6
    scp = dict(line.split(maxsplit=1) for line in (out / "wav.scp").read_text().splitlines())
    assert sorted(scp) == [f"utt{i}" for i in range(6)]
    for path in scp.values():
        wave, sr = sf.read(path.strip())
        assert sr == SR and wave.ndim == 1 and abs(len(wave) - SR) <= 2 * HOP_LENGTH
        assert np.abs(wave).max() > 1e-3
    settings = yaml.safe_load((out / "synth.yaml").read_text())
    assert settings["head"] == head and settings["griffin_lim"]["n_iter"] == 32
    assert not list(out.rglob("*.tmp.*"))


def test_trained_model_tracks_token_pitch(toy, trained):
    """The predicted mel's loudest bin follows the token: the two highest-pitch tokens map to higher bins."""
    from softtok.downstream.vocoder.mel import load_trained
    model, _ = load_trained(trained[0])
    with torch.no_grad():
        mel, _ = model(TokenInput("ids", ids=torch.arange(K).repeat_interleave(10)[None, :, None]), torch.tensor([10 * K]))
    peaks = [int(mel[0, 20 * k + 5:20 * k + 15].mean(0).argmax()) for k in range(K)]
    assert peaks[0] < peaks[1] < peaks[2] < peaks[3], peaks  # measured [5, 7, 11, 16]; targets' peaks 4, 7-8, 11, 16


def _one_line(exc, *words):
    message = str(exc.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_bad_inputs(toy, trained, tmp_path):
    exp, _ = trained
    tok_model = MelVocoder(n_tokens=K, **SMALL_MODEL).eval()
    cont_model = MelVocoder(feat_dim=DIM, **SMALL_MODEL).eval()
    with pytest.raises(ValueError) as e:
        tok_model(TokenInput("probs", probs=torch.full((1, 3, 1, K + 1), 0.2)), torch.tensor([3]))
    _one_line(e, "K=5", "K=4")
    with pytest.raises(ValueError) as e:
        tok_model(TokenInput("feats", feats=torch.zeros(1, 3, DIM)), torch.tensor([3]))
    _one_line(e, "trained on tokens", "continuous")
    with pytest.raises(ValueError) as e:
        cont_model(TokenInput("ids", ids=torch.zeros(1, 3, 1, dtype=torch.long)), torch.tensor([3]))
    _one_line(e, "continuous features")
    with pytest.raises(ValueError) as e:
        tok_model(TokenInput("ids", ids=torch.zeros(1, 0, 1, dtype=torch.long)), torch.tensor([0]))
    _one_line(e, "empty token sequence")
    config = yaml.safe_load((exp / "config.yaml").read_text())
    wrong_k = tmp_path / "k3.npy"
    Codebook(toy["centroids"][:3]).save(wrong_k)
    with pytest.raises(ValueError) as e:
        inference_head(config, "hard", {}, str(wrong_k))
    _one_line(e, "K=3", "K=4")
    with pytest.raises(ValueError) as e:
        inference_head(config, "continuous", {})
    _one_line(e, "cannot take head 'continuous'")
    with pytest.raises(ValueError) as e:
        griffin_lim(torch.zeros(10, 40))
    _one_line(e, "(T, 80)")
    with pytest.raises(ValueError) as e:
        MelVocoderData(toy["feats"], toy["data"], sample_rate=8000)
    _one_line(e, "sample rate", "16000")
    with pytest.raises(ValueError) as e:
        log_mel(np.zeros(1600, np.float32), sr=22050)
    _one_line(e, "sample rate")
    # features at another frame rate (100 /s) than the audio's 50 token frames per second
    with ArkScpWriter(tmp_path / "f.ark", tmp_path / "f.scp") as writer:
        writer.write("utt0", np.zeros((100, DIM), np.float32))
    with pytest.raises(ValueError) as e:
        MelVocoderData(str(tmp_path / "f.scp"), toy["data"])
    _one_line(e, "utt0", "100 token frames", "mel frames")
    with ArkScpWriter(tmp_path / "g.ark", tmp_path / "g.scp") as writer:
        writer.write("nope", np.zeros((50, DIM), np.float32))
    with pytest.raises(ValueError) as e:
        MelVocoderData(str(tmp_path / "g.scp"), toy["data"])
    _one_line(e, "'nope'", "no audio")
    # CLI: bad input is exit status 1, not a traceback
    assert synth_main(["--exp-dir", str(exp), "--feats", toy["feats"], "--out-dir", str(tmp_path / "x"),
                       "--head", "soft", "--head-conf", "{tau: 1}", "--kmeans", str(wrong_k)]) == 1
    head = build_head("hard", Codebook(toy["centroids"]))
    assert head(torch.from_numpy(toy["centroids"])).ids[:, 0].tolist() == list(range(K))


def test_continuous_model_trains_and_synthesizes_with_its_own_head(toy, tmp_path):
    exp = tmp_path / "exp_cont"
    summary = voc_train.train(toy["config"], toy["feats"], toy["data"], str(exp), head="continuous",
                              overrides={"max_epoch": 2}, valid_feats=toy["feats"], valid_data=toy["data"],
                              device="cpu")
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert summary["epochs"] == 2 and config["feat_dim"] == DIM and config["n_tokens"] is None
    # no --head: the training head (continuous) is used
    assert synth_main(["--exp-dir", str(exp), "--feats", toy["feats"], "--out-dir", str(tmp_path / "s"),
                       "--n-iter", "4"]) == 0
    assert yaml.safe_load((tmp_path / "s" / "synth.yaml").read_text())["head"] == "continuous"
    assert len((tmp_path / "s" / "wav.scp").read_text().splitlines()) == 6
    with pytest.raises(ValueError) as e:
        synthesize(str(exp), toy["feats"], str(tmp_path / "t"), "hard", {}, kmeans=toy["kmeans"])
    _one_line(e, "continuous features", "cannot take head 'hard'")


def test_multi_source_and_dmel_tokens_train_and_synthesize_alike(toy, tmp_path):
    """--head means one thing everywhere: two sources (one codebook each) and dMel channels drive the vocoder too,
    and soft synthesis at τ → 0 writes the same waves as hard."""
    from softtok.tokenizers.dmel import run_learn_dmel

    two_feats, two_kmeans = f"{toy['feats']},{toy['feats']}", f"{toy['kmeans']},{toy['kmeans']}"
    run_learn_dmel(toy["feats"], 4, str(tmp_path / "dmel.npy"))
    for name, feats, kmeans, n_tokens in (("two", two_feats, two_kmeans, [K, K]),
                                          ("dmel", toy["feats"], str(tmp_path / "dmel.npy"), [4] * DIM)):
        exp = tmp_path / name
        voc_train.train(toy["config"], feats, toy["data"], str(exp), head="hard", kmeans=kmeans,
                        overrides={"max_epoch": 1, "embed_init": "centroids"}, device="cpu")
        config = yaml.safe_load((exp / "config.yaml").read_text())
        assert config["n_tokens"] == n_tokens and isinstance(config["kmeans"], list) == (name == "two")
        hard = synthesize(str(exp), feats, str(tmp_path / f"{name}_hard"), "hard", {}, n_iter=2)
        cold = synthesize(str(exp), feats, str(tmp_path / f"{name}_cold"), "soft", {"tau": 1e-12}, n_iter=2)
        assert hard["utterances"] == cold["utterances"] == 6
        for wav in sorted((tmp_path / f"{name}_hard" / "wav").glob("*.wav")):
            assert wav.read_bytes() == (tmp_path / f"{name}_cold" / "wav" / wav.name).read_bytes()
    with pytest.raises(ValueError) as e:
        synthesize(str(tmp_path / "two"), toy["feats"], str(tmp_path / "x"), "hard", {})
    _one_line(e, "feature dims [8]", "sources of dims [8, 8]")
