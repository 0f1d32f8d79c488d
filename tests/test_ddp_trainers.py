"""The ASR, mel- and HiFi-GAN vocoder trainers under ``torchrun --standalone --nproc_per_node 2`` (gloo, CPU) on tiny sets.

ASR: one set of files, validation stats reduced over ranks, the model decodes, resume. Vocoders: the same, briefly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from softtok.downstream.asr import train as asr_train
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.decode import decode
from softtok.downstream.asr.model import CharTokenizer
from softtok.downstream.vocoder import hifigan as voc_hifigan
from softtok.downstream.vocoder import mel as voc_mel
from softtok.downstream.vocoder import train as voc_train
from softtok.tokenizers.datadir import read_kaldi_map, write_kaldi_map
from softtok.tokenizers.fileio import ArkScpWriter, load_yaml
from softtok.tokenizers.heads import build_head
from softtok.tokenizers.kmeans import Codebook
from test_vocoder_mel import toy  # noqa: F401  (fixture: six 1 s utterances, codebook, config)

K, DIM = 4, 6
LETTERS = "ABCD"
CONFIG = {"seed": 0, "max_epoch": 1, "batch_frames": 90, "lr": 2e-3, "warmup_steps": 5, "keep_nbest": 2,
          "num_threads": 1, "embed_init": "centroids",
          "model": {"embed_dim": 16, "encoder": "e_branchformer",
                    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32,
                                     "cgmlp_linear_units": 32, "num_blocks": 1, "input_layer": "conv1d2",
                                     "cgmlp_conv_kernel": 7, "merge_conv_kernel": 7},
                    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
                    "masking_conf": {"num_time_masks": 1, "num_channel_masks": 1, "channel_mask_width": 2}}}


def _write_set(dest: Path, centroids: np.ndarray, n_utts: int, rng: np.random.Generator) -> Dict[str, str]:
    """``n_utts`` utterances of 4-frame token runs (features = centroid + noise), text = the tokens' letters."""
    text = {}
    with ArkScpWriter(dest / "feats.ark", dest / "feats.scp") as writer:
        for i in range(n_utts):
            ids = rng.integers(0, K, size=int(rng.integers(5, 11)))
            frames = np.repeat(ids, 4)
            noise = 0.1 * rng.standard_normal((len(frames), DIM)).astype(np.float32)
            writer.write(f"u{i:02d}", centroids[frames] + noise)
            text[f"u{i:02d}"] = " ".join(LETTERS[k] for k in ids)
    write_kaldi_map(dest / "text", text)
    return {"feats": str(dest / "feats.scp"), "text": str(dest / "text")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Dict[str, str]:
    """A codebook, 11 training (5 batches: one dropped) and 5 validation utterances (3 batches), the config."""
    root = tmp_path_factory.mktemp("asr_ddp")
    rng = np.random.default_rng(0)
    centroids = (2 * rng.standard_normal((K, DIM))).astype(np.float32)
    Codebook(centroids).save(root / "km.npy")
    train, valid = _write_set(root / "train", centroids, 11, rng), _write_set(root / "valid", centroids, 5, rng)
    (root / "conf.yaml").write_text(yaml.safe_dump(CONFIG))
    return {"root": str(root), "kmeans": str(root / "km.npy"), "config": str(root / "conf.yaml"),
            "train_feats": train["feats"], "train_text": train["text"],
            "valid_feats": valid["feats"], "valid_text": valid["text"]}


def torchrun(module: str, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m module args`` on CPU, one thread per rank; checks exit 0."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module,
            *args, "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def train_asr(tiny: Dict[str, str], exp: Path, max_epoch: int) -> subprocess.CompletedProcess:
    """The ASR trainer on the tiny set, two ranks."""
    return torchrun("softtok.downstream.asr.train", "--config", tiny["config"], "--head", "hard",
                    "--kmeans", tiny["kmeans"], "--train-feats", tiny["train_feats"], "--train-text",
                    tiny["train_text"], "--valid-feats", tiny["valid_feats"], "--valid-text", tiny["valid_text"],
                    "--exp-dir", str(exp), "--override", f"{{max_epoch: {max_epoch}}}")


@pytest.fixture(scope="module")
def first_run(tiny):
    exp = Path(tiny["root"]) / "exp"
    return exp, train_asr(tiny, exp, max_epoch=1)


def _files(exp: Path) -> set:
    return {str(p.relative_to(exp)) for p in exp.rglob("*") if p.is_file()}


def test_two_ranks_write_one_set_of_files(first_run, tiny):
    exp, out = first_run
    n_batches = len(TokenASRData(tiny["train_feats"]).batches(CONFIG["batch_frames"]))
    assert n_batches % 2 == 1  # so one batch is dropped and both ranks still take as many steps
    assert f"{n_batches} batches over 2 ranks: {n_batches // 2} each, the last 1 dropped" in out.stderr
    assert "distributed training: 2 ranks (gloo)" in out.stderr
    assert _files(exp) == {"config.yaml", "train.log", "history.yaml", "model.pth", "checkpoints/epoch1.pth"}
    log = (exp / "train.log").read_text()
    assert log.count("distributed training: 2 ranks") == 1 and log.count("epoch 1: ") == 1
    assert out.stderr.count("epoch 1: ") == 1  # rank 1 logs warnings only
    assert [h["epoch"] for h in load_yaml(exp / "history.yaml")["history"]] == [1]


def test_validation_stats_are_reduced_over_ranks(first_run, tiny):
    """Each rank validates some batches; the summed record equals one process validating them all."""
    exp, _ = first_run
    config = load_yaml(exp / "config.yaml")
    model = asr_train.build_model(config)
    model.load_state_dict(torch.load(exp / "checkpoints" / "epoch1.pth", weights_only=False)["model"])
    tokenizer = CharTokenizer(config["token_list"][2:-1])
    valid = TokenASRData(tiny["valid_feats"], read_kaldi_map(Path(tiny["valid_text"])))
    groups = valid.batches(CONFIG["batch_frames"])
    assert len(groups) > 2  # both ranks validated something
    head = build_head("hard", Codebook.load(tiny["kmeans"]))
    expected = asr_train._run_epoch(model, valid, groups, head, tokenizer)
    record = load_yaml(exp / "history.yaml")["history"][0]
    assert record["valid_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert record["valid_acc"] == pytest.approx(expected["acc"], rel=1e-5)


def test_ddp_model_loads_and_decodes(first_run, tiny, tmp_path):
    exp, _ = first_run
    model, config, tokenizer = asr_train.load_trained(exp)
    assert config["head"] == "hard" and len(tokenizer) == len(config["token_list"])
    result = decode(str(exp), tiny["valid_feats"], str(tmp_path / "dec"), tiny["valid_text"], "hard", device="cpu")
    assert result["utts"] == 5 and "wer" in result


def test_resumed_run_continues_from_the_saved_epoch(first_run, tiny):
    exp, _ = first_run
    epoch1 = (exp / "checkpoints" / "epoch1.pth").read_bytes()
    history1 = load_yaml(exp / "history.yaml")["history"]
    out = train_asr(tiny, exp, max_epoch=2)
    assert f"resumed from {exp / 'checkpoints' / 'epoch1.pth'}" in out.stderr
    assert "epoch 1: " not in out.stderr and out.stderr.count("epoch 2: ") == 1
    assert (exp / "checkpoints" / "epoch1.pth").read_bytes() == epoch1
    history = load_yaml(exp / "history.yaml")["history"]
    assert [h["epoch"] for h in history] == [1, 2] and history[0] == history1[0]
    assert _files(exp) == {"config.yaml", "train.log", "history.yaml", "model.pth", "checkpoints/epoch1.pth",
                           "checkpoints/epoch2.pth"}
    assert (exp / "train.log").read_text().count("resumed from") == 1


def test_mel_vocoder_trains_on_two_ranks(toy, tmp_path):  # noqa: F811
    exp = tmp_path / "voc"
    out = torchrun("softtok.downstream.vocoder.train", "--config", toy["config"], "--feats", toy["feats"],
                   "--data-dir", toy["data"], "--kmeans", toy["kmeans"], "--head", "hard", "--exp-dir", str(exp),
                   "--override", "{max_epoch: 2}")
    assert "distributed training: 2 ranks (gloo)" in out.stderr and out.stderr.count("epoch 2: ") == 1
    assert _files(exp) == {"config.yaml", "train.log", "history.yaml", "model.pth", "checkpoints/epoch1.pth",
                           "checkpoints/epoch2.pth"}
    model = voc_mel.build_model(load_yaml(exp / "config.yaml"))
    model.load_state_dict(torch.load(exp / "checkpoints" / "epoch2.pth", weights_only=False)["model"])
    data = voc_mel.MelVocoderData(toy["feats"], toy["data"])
    head = build_head("hard", Codebook.load(toy["kmeans"]))
    groups = data.batches(load_yaml(toy["config"])["batch_frames"])
    expected = voc_train._run_epoch(model, data, groups, head)  # the training set validates
    assert load_yaml(exp / "history.yaml")["history"][1]["valid_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    voc_mel.load_trained(exp)


HIFIGAN_SMOKE = REPO / "egs" / "piper_joe" / "voc" / "conf" / "hifigan_smoke.yaml"


def train_hifigan(toy: Dict, exp: Path, max_epoch: int) -> subprocess.CompletedProcess:  # noqa: F811
    """The HiFi-GAN trainer (smoke config: 6 crops a epoch in batches of 4 and 2, one per rank) on two ranks."""
    return torchrun("softtok.downstream.vocoder.hifigan", "train", "--config", str(HIFIGAN_SMOKE), "--feats",
                    toy["feats"], "--data-dir", toy["data"], "--kmeans", toy["kmeans"], "--head", "hard",
                    "--exp-dir", str(exp), "--override", f"{{max_epoch: {max_epoch}}}")


def test_hifigan_trains_on_two_ranks_and_resumes(toy, tmp_path):  # noqa: F811
    exp = tmp_path / "hifigan"
    out = train_hifigan(toy, exp, max_epoch=1)
    assert out.stderr.count("distributed training: 2 ranks (gloo)") == 2  # the generator and the discriminator
    assert _files(exp) == {"config.yaml", "train.log", "history.yaml", "model.pth", "checkpoints/epoch1.pth"}
    assert out.stderr.count("training: epoch 1: ") == 1  # rank 1 logs warnings only
    assert (exp / "train.log").read_text().count("epoch 1: ") == 1
    record = load_yaml(exp / "history.yaml")["history"][0]
    assert record["train_steps"] == 1  # two batches, one per rank
    # validation: each rank scored one of the max_valid_utts = 2 utterances; the record is their mean
    config = load_yaml(exp / "config.yaml")
    gen = voc_hifigan.build_generator(config)
    gen.load_state_dict(torch.load(exp / "checkpoints" / "epoch1.pth", weights_only=False)["model"])
    data = voc_hifigan.WaveVocoderData(toy["feats"], toy["data"])
    losses = voc_hifigan.GANLosses(config["mel_loss"], 45.0, 2.0, 1.0)
    expected = voc_hifigan._validate(gen, data, data.utts[:2], build_head("hard", Codebook.load(toy["kmeans"])),
                                     losses, "cpu")
    assert record["valid_loss"] == pytest.approx(expected, rel=1e-5)
    epoch1 = (exp / "checkpoints" / "epoch1.pth").read_bytes()
    out = train_hifigan(toy, exp, max_epoch=2)
    assert f"resumed from {exp / 'checkpoints' / 'epoch1.pth'}" in out.stderr
    assert "training: epoch 1: " not in out.stderr and out.stderr.count("training: epoch 2: ") == 1
    assert (exp / "checkpoints" / "epoch1.pth").read_bytes() == epoch1
    history = load_yaml(exp / "history.yaml")["history"]
    assert [h["epoch"] for h in history] == [1, 2] and history[0] == record
    state = torch.load(exp / "checkpoints" / "epoch2.pth", weights_only=False)
    assert state["scheduler"]["last_epoch"] == 2 and state["extra"]["scheduler_d"]["last_epoch"] == 2
    assert _files(exp) == {"config.yaml", "train.log", "history.yaml", "model.pth", "checkpoints/epoch1.pth",
                           "checkpoints/epoch2.pth"}
    voc_hifigan.synthesize(str(exp), toy["feats"], str(tmp_path / "synth"))
