"""The vocoder results stage on a hand-made experiment: every cell and interval over the same utterances (the old
per-condition means were not), several K, both judges and DNSMOS, the oracles, the listening samples."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import soundfile as sf

from conftest import make_speechocean_subset, needs_shared, write_wave
from corpus_fixtures import WORDS, tone
from softtok.downstream.scoring import write_score_dir
from softtok.recipes.voc import cli
from softtok.recipes.voc.evaluate import _means, reference
from softtok.recipes.voc.oracles import ORACLES, mel_oracle, oracle
from softtok.recipes.voc.report import results_markdown
from softtok.recipes.voc.results import collect_results, table_conditions
from softtok.recipes.voc.samples import write_samples
from softtok.reporting import report_parts, save_json
from softtok.tokenizers.datadir import load_data_dir, write_data_dir
from softtok.tokenizers.fileio import save_yaml

UTTS = [f"utt{i}" for i in range(5)]
SETS = {"test_id": "id", "test_ood": "ood"}
TEXT = {u: WORDS[i] for i, u in enumerate(UTTS)}
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


def _score(folder: Path, kind: str, seed: int, nan_f0: Sequence[str] = (), new_judges: bool = True,
           sample_rate: int = 0) -> None:
    """metrics.json (per_utt + summary as the Evaluator writes them), judge/ (and judge_pocketsphinx/ and DNSMOS
    where ``new_judges``) and, with ``sample_rate``, short audio and its wav.scp."""
    rng = np.random.default_rng(seed)
    per_utt: Dict[str, Dict[str, float]] = {}
    for u in UTTS:
        row = {"mcd_db": rng.uniform(4, 9), "mel_dist": rng.uniform(0.1, 0.9)} if kind == "id" else {}
        if kind != "natural":
            row.update(f0_rmse_hz=math.nan if u in nan_f0 else rng.uniform(10, 60),
                       f0_corr=math.nan if u in nan_f0 else rng.uniform(0, 1), vuv_error=rng.uniform(0, 0.5))
        row["speaker_sim"] = rng.uniform(0.5, 0.95)
        row.update({k: rng.uniform(1, 4.5) for k in DNSMOS} if new_judges else {})
        per_utt[u] = row
    save_json(folder / "metrics.json", {"kind": kind, "per_utt": per_utt,
                                        "summary": {"n_utts": len(UTTS), **_means(per_utt)}})
    for judge in ("judge", "judge_pocketsphinx") if new_judges else ("judge",):
        hyps = {u: " ".join(w if rng.uniform() < 0.7 else "UH" for w in t.split()) for u, t in TEXT.items()}
        write_score_dir(folder / judge, TEXT, hyps)
    if sample_rate:
        wav = {u: str(write_wave(folder / "wav" / f"{u}.wav", tone(0.5 + 0.1 * i, sample_rate), sample_rate))
               for i, u in enumerate(UTTS)}
        (folder / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in wav.items()))


def _sweep(exp: Path, tau: float, beats_hard: bool, scores: Dict[str, float]) -> None:
    """A hard model's config.yaml and tau_sweep.yaml: one τ scoring ``scores`` on dev, hard scoring 0.1 more."""
    save_yaml(exp / "config.yaml", {"vocoder": "conformer_mel", "n_tokens": int(exp.name.rsplit("k", 1)[1])})
    best = {"factor": 0.1, "tau": tau, **scores}
    save_yaml(exp / "tau_sweep.yaml", {"set": "dev", "criterion": next(iter(scores)), "median_sqdist": 25.0,
                                       "hard": {k: v + 0.1 for k, v in scores.items()}, "sweep": [dict(best)],
                                       "best": {**best, "beats_hard": beats_hard}})


@pytest.fixture
def exp(tmp_path) -> Path:
    """natural + HiFi-GAN oracle; conformer_mel K=8 (τ* 2.5; F0 NaN on utt1 for hard, utt2 for soft), K=16 (no τ
    beat hard; scored before the new judges: no pocketsphinx, no DNSMOS) and continuous (F0 NaN on utt3)."""
    for name in SETS:
        wav = {u: str(write_wave(tmp_path / "audio" / name / f"{u}.wav", tone(0.5 + 0.1 * i))) for i, u in
               enumerate(UTTS)}
        write_data_dir(tmp_path / "data" / name, wav, TEXT, {u: "spk" for u in UTTS})
    root = tmp_path / "exp"
    _sweep(root / "voc_cm_hard_k8", 2.5, True, {"mcd_db": 7.5, "mel_dist": 0.7})
    _sweep(root / "voc_cm_hard_k16", 4.0, False, {"mel_l1": 0.65})  # τ* by the model's mel L1 (model_mel)
    save_yaml(root / "voc_cm_continuous" / "config.yaml", {"vocoder": "conformer_mel", "n_tokens": None})
    for name, kind in SETS.items():
        _score(root / "reference" / "natural" / name, "natural", 1)
        if kind == "id":
            _score(root / "reference" / "hifigan_oracle" / name, kind, 2, sample_rate=22050)
        _score(root / "voc_cm_hard_k8" / "synth_hard" / name, kind, 3, ["utt1"], sample_rate=22050)
        _score(root / "voc_cm_hard_k8" / "synth_soft_tau2.5" / name, kind, 4, ["utt2"], sample_rate=22050)
        _score(root / "voc_cm_hard_k16" / "synth_hard" / name, kind, 5, new_judges=False, sample_rate=22050)
        _score(root / "voc_cm_continuous" / "synth_continuous" / name, kind, 6, ["utt3"], sample_rate=16000)
    return root


def _rows(results, name):
    return {r["condition"]: r for r in results["tables"][name]["rows"]}


def test_cells_and_intervals_are_over_the_same_utterances(exp):
    """A soft − hard cell difference is its interval's point estimate, on every metric; F0 cells are over the
    utterances where every row has F0 (2 of 5). The old cells (each condition's own ``_means``) were not."""
    results = collect_results(str(exp), ["cm"], [8, 16], ["test_id"], ["test_ood"])
    for name in SETS:
        table, rows = results["tables"][name], _rows(results, name)
        assert table["n_utts"] == 5 and table["metric_utts"]["f0_rmse_hz"] == 2  # utt0 and utt4 only
        assert table["metric_utts"]["vuv_error"] == table["metric_utts"]["speaker_sim"] == 5
        diff = next(d for d in table["soft_vs_hard"] if d["K"] == 8)["metrics"]
        hard, soft = rows["cm_hard_k8"]["metrics"], rows["cm_soft_k8"]["metrics"]
        assert set(diff) == set(hard) and len(diff) == (14 if name == "test_id" else 12)
        for key, ci in diff.items():
            tol = 0.01 if key in ("wer", "cer", "wer_ps", "cer_ps") else 1e-4  # cells rounded to 2 and 4 decimals
            assert soft[key] - hard[key] == pytest.approx(ci["delta"], abs=tol), key
            assert ci["n_utts"] == (2 if key.startswith("f0") else 5), key
        old = json.loads((exp / "voc_cm_hard_k8" / "synth_hard" / name / "metrics.json").read_text())["summary"]
        assert abs(old["f0_rmse_hz"] - hard["f0_rmse_hz"]) > 1  # the old cell: hard's mean over its own 4 utterances


def test_several_k_rows_sweeps_and_rendering(exp):
    results = collect_results(str(exp), ["cm"], [8, 16], ["test_id"], ["test_ood"])
    assert results["format"] == 2 and results["K"] == [8, 16]
    assert list(_rows(results, "test_id")) == ["natural", "hifigan_oracle", "cm_hard_k8", "cm_soft_k8",
                                               "cm_hard_k16", "cm_soft_k16", "cm_continuous"]
    assert list(_rows(results, "test_ood")) == ["natural", "cm_hard_k8", "cm_soft_k8", "cm_hard_k16",
                                                "cm_soft_k16", "cm_continuous"]
    rows = _rows(results, "test_id")
    assert rows["cm_soft_k8"]["tau"] == 2.5 and rows["cm_soft_k16"]["tau"] is None  # K=16: soft falls back to hard
    assert rows["cm_soft_k16"]["metrics"] == rows["cm_hard_k16"]["metrics"]
    assert "wer_ps" not in rows["cm_hard_k16"]["metrics"] and "dnsmos_ovrl" not in rows["cm_hard_k16"]["metrics"]
    k16 = next(d for d in results["tables"]["test_id"]["soft_vs_hard"] if d["K"] == 16)["metrics"]
    assert all(ci["delta"] == 0 for ci in k16.values()) and "wer_ps" not in k16
    assert set(results["vocoders"]["cm"]["tau_sweeps"]) == {"8", "16"}
    md = results_markdown(results, "python -m softtok.recipes.voc results ...")
    for text in ("K = 8, 16.", "| HiFi-GAN from natural mels | ", "| cm soft (τ*) K=8 | ", "| cm continuous | ",
                 "| condition | MCD dB ↓ | log-mel dist ↓ | F0 RMSE Hz ↓ | F0 corr ↑ | V/UV err ↓ "
                 "| Whisper judge WER % ↓ | pocketsphinx WER % (independent judge) ↓ | DNSMOS OVRL ↑ | spk sim ↑ |",
                 "| soft − hard | K=8 (τ* = 2.5) | K=16 (soft is hard) |",
                 "over fewer than all 5 utterances (those where every row has a finite value): "
                 "F0 RMSE 2 (fewest finite: cm hard K=8, 4); F0 corr 2 (fewest finite: cm hard K=8, 4); every",
                 "### cm K=8", "### cm K=16", "| τ / median d² | τ | dev MCD dB | dev log-mel dist |",
                 "| 0.1 | 4 | 0.6500 |\n| hard | – | 0.7500 |",
                 "lowest mean dev model log-mel L1 (nothing synthesised), but not below hard's: **soft (τ*) falls back",
                 "Whisper tiny.en",
                 "| source (natural) | "):
        assert text in md, text
    hard16 = next(line for line in md.splitlines() if line.startswith("| cm hard K=16 | "))  # test_id's main table
    assert hard16.split(" | ")[7:9] == ["–", "–"]  # scored before pocketsphinx and DNSMOS: dashes
    k8 = next(d for d in results["tables"]["test_id"]["soft_vs_hard"] if d["K"] == 8)["metrics"]
    assert f"| Whisper judge WER % ↓ | {_ci_text(k8['wer'])} | {_ci_text(k16['wer'])} |" in md
    assert f"| pocketsphinx WER % (independent judge) ↓ | {_ci_text(k8['wer_ps'])} | – |" in md


def _ci_text(ci) -> str:
    return f"{ci['delta']:+.2f} [{ci['ci_low']:+.2f}, {ci['ci_high']:+.2f}]"


def test_rows_of_other_utterances_are_refused(exp):
    path = exp / "voc_cm_continuous" / "synth_continuous" / "test_ood" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["per_utt"]["utt4"]
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=f"{path}: 4 utterances, .* 5 .*every row of a table must score the same"):
        collect_results(str(exp), ["cm"], [8], ["test_id"], ["test_ood"])
    with pytest.raises(FileNotFoundError, match="voc_cm_hard_k32: no trained cm vocoder"):
        collect_results(str(exp), ["cm"], [8, 32], ["test_id"], [])


def test_results_stage_writes_samples_and_spectrograms(exp, tmp_path):
    """``softtok voc results --k 8 16``: Opus samples (16 kHz, small) of 3 utterances per set under every
    condition, linked from RESULTS.md and listed in results.json; one spectrogram PNG per set."""
    out = tmp_path / "report"
    argv = ["results", "--exp", str(exp), "--data", str(tmp_path / "data"), "--vocoders", "cm", "--k", "8", "16",
            "--id-sets", "test_id", "--ood-sets", "test_ood", "--out-dir", str(out)]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    md = (out / "RESULTS.md").read_text()
    samples = results["samples"]["test_id"]
    assert samples["utts"] == ["utt0", "utt2", "utt4"] and len(samples["files"]) == 7
    for name in SETS:
        for cond, files in results["samples"][name]["files"].items():
            for utt, rel in files.items():
                info = sf.info(str(out / rel))
                assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 16000)
                assert (out / rel).stat().st_size < 30_000 * max(info.duration, 1) / 4
                assert f"[▶]({rel})" in md and rel == f"samples/{name}/{utt}/{cond}.opus"
        assert (out / results["spectrograms"][name]["file"]).stat().st_size > 1000
    assert "## Listening samples" in md and "| condition | utt0 | utt2 | utt4 |" in md
    assert (out / "tau_sweep.png").is_file()
    parts = report_parts(md)
    assert results_markdown(results, parts["commands"], parts["generated"]) == md  # renders from results.json alone
    again = write_samples(table_conditions(exp, ["cm"], [8, 16], "test_ood", "ood"), str(tmp_path / "data"),
                          "test_ood", out, n=1)
    assert again["utts"] == ["utt0"] and [p.name for p in (out / "samples" / "test_ood").iterdir()] == ["utt0"]


@needs_shared
def test_hifigan_oracle_of_real_speech(tmp_path):
    """Two real utterances' mels through the pretrained HiFi-GAN: 22,050 Hz, 256 samples per mel frame."""
    from softtok.downstream.vocoder.hifigan_mel import mel_frames
    from softtok.tokenizers.audio import read_utterance, resampled_length

    data = make_speechocean_subset(tmp_path / "data", 2, split="test")
    scp = mel_oracle(data, tmp_path / "oracle", ORACLES["hifigan"])
    ref = load_data_dir(data)
    for utt, path in (line.split() for line in scp.read_text().splitlines()):
        info = sf.info(path)
        n22 = resampled_length(len(read_utterance(ref, utt)), 16000, 22050)
        assert info.samplerate == 22050 and info.frames == 256 * mel_frames(n22)
    assert mel_oracle(data, tmp_path / "oracle", ORACLES["hifigan"]) == scp  # done: kept
    with pytest.raises(ValueError, match="unknown oracle 'nosuch'; choose from hifigan, griffin_lim"):
        reference(str(data), ["x"], [], "nowhere.npy", str(tmp_path / "ref"), ["hifigan", "nosuch"])
    assert oracle("griffin_lim").folder == "gl_oracle"  # the older recipe's rows
