"""bench/inference.py keeps working: per-stage timing of hard, soft dense and soft top-k from real speech, on a
bundle made here (random weights, bench/random_bundle.py), a few utterances and a short windowed recording."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, SPEECHOCEAN, make_speechocean_subset, needs_whisper
from softtok.tokenizers.dump_features import dump_features
from softtok.tokenizers.jobs import run_learn_kmeans

pytestmark = [needs_whisper, pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"{SPEECHOCEAN} not present")]

BENCH = REPO / "bench"
TINY_ASR = {"seed": 0, "max_utt_frames": 250, "num_threads": 1,  # 5 s windows: the long recording is cut
            "model": {"embed_dim": 16, "encoder": "e_branchformer",
                      "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 16,
                                       "cgmlp_linear_units": 16, "num_blocks": 1, "input_layer": "conv1d2"},
                      "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1}}}


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(BENCH / "inference.py"), *args], capture_output=True, text=True,
                          env=env, timeout=240)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> dict:
    """A random-weight K=8 bundle on whisper features of 4 train utterances, and 6 test utterances (3 timed, all 6 make the long recording)."""
    root = tmp_path_factory.mktemp("bench_inference")
    train = make_speechocean_subset(root / "train", 4)
    feats = dump_features(str(train), "whisper", str(root / "dump"))["output"]
    run_learn_kmeans(feats, 8, "faiss", str(root / "km8.npy"))
    (root / "asr.yaml").write_text(yaml.safe_dump(TINY_ASR))
    bench_module("random_bundle").random_bundle(str(root / "asr.yaml"), feats, str(root / "km8.npy"),
                                                str(train / "text"), str(root / "bundle"))
    return {"root": root, "bundle": root / "bundle", "test": make_speechocean_subset(root / "test", 6, "test")}


def test_help():
    result = run_bench("--help")
    assert result.returncode == 0 and "--out-dir" in result.stdout and "--repeats" in result.stdout


def test_bench_times_every_stage_of_every_head(bundle):
    root = bundle["root"]
    out = root / "out"
    result = run_bench("--bundle", f"tiny={bundle['bundle']}", "--data-dir", str(bundle["test"]), "--max-utts", "3", "--long-seconds",
                       "12", "--work-dir", str(root / "work"), "--repeats", "1", "--threads", "1", "--max-load",
                       "1000", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "inference.json").read_text())
    assert set(record["sets"]) == {"test", "long"} and record["machine"]["torch_threads"] == 1
    assert record["sets"]["test"]["inputs"] == 3
    assert record["sets"]["long"]["windows"] > 1 and record["long_recording"]["seconds"] >= 12
    assert json.loads((root / "work" / "long_12s.json").read_text())["utterances"] > 1  # recorded on reuse
    for res in record["sets"].values():
        heads = res["models"]["tiny"]["heads"]
        assert set(heads) == {"hard", "soft", "soft_twostep", "soft_topk"}
        fused, twostep = heads["soft"]["seconds"], heads["soft_twostep"]["seconds"]
        assert fused["head.call"] == 0 < fused["model.embed"] and twostep["head.call"] > 0  # fused: in the embedding
        for row in heads.values():
            s = row["seconds"]
            assert all(s[k] >= 0 for k in ("read", "features", "head", "model", "search", "model.embed"))
            assert row["e2e_s"] == pytest.approx(s["read"] + s["features"] + s["head"] + s["model"] + s["search"])
            assert row["e2e_rtf"] == pytest.approx(row["e2e_s"] / res["audio_s"])
        assert set(res["models"]["tiny"]["ratios"]) == {"soft", "soft_twostep", "soft_topk"}
    direct = record["e2e_direct"]["tiny"]
    assert all(rec["same_text_as_staged"] for rec in direct.values())  # the staged decode is transcribe's
    settings = record["head_settings"]["tiny"]
    assert settings["soft"]["tau"] > 0 and settings["soft_topk"]["top_k"] == 8
    assert settings["soft_twostep"] == {**settings["soft"], "fused": False}
    md = (out / "INFERENCE.md").read_text()
    assert "soft / hard =" in md and "No GPU" in md and "bench/inference.py" in md


def test_report_keeps_hand_written_notes(bundle, tmp_path):
    report = bench_module("inference_report")
    record = json.loads((bundle["root"] / "out" / "inference.json").read_text())
    report.write_outputs(record, tmp_path)
    md = tmp_path / "INFERENCE.md"
    md.write_text(md.read_text() + "Reading: features dominate.\n")
    report.write_outputs(record, tmp_path, write_json=False)
    assert md.read_text().endswith(report.NOTES_MARKER + "\nReading: features dominate.\n")
