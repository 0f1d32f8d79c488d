"""egs/librispeech_100/asr in --smoke mode: every stage on fixture trees of all its corpora, with a tiny random HuBERT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, absolute_paths
from corpus_fixtures import (make_chime4, make_erj, make_l2arctic, make_librispeech, make_speechocean, make_tedlium2,
                             tiny_hubert)
from softtok.tokenizers.tau import sweep_choice
from softtok.tokenizers.fileio import load_yaml

transformers = pytest.importorskip("transformers")

RECIPE = REPO / "egs" / "librispeech_100" / "asr" / "run.sh"
TEST_SETS = ["test_clean", "test_other", "tedlium2_test", "chime4_et05_real", "chime4_et05_simu", "l2arctic",
             "speechocean762_test", "erj"]


def _run(root: Path, corpora: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    argv = [str(RECIPE), "--smoke", "true", "--corpus_root", str(corpora), "--erj", str(corpora / "ERJ"),
            "--checkpoint", str(root / "hubert"), "--layer", "2", "--data", str(root / "data"),
            "--dump", str(root / "dump"), "--exp_dir", str(root / "exp"), "--results_dir", str(root), *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """Fixture corpora + tiny HuBERT, then the whole recipe once."""
    root = tmp_path_factory.mktemp("libri_smoke")
    corpora = root / "corpora"
    make_librispeech(corpora)
    make_tedlium2(corpora)
    make_chime4(corpora)
    make_l2arctic(corpora)
    make_speechocean(corpora)
    make_erj(corpora)
    tiny_hubert(root / "hubert")
    out = _run(root, corpora)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root


def test_smoke_recipe_results_cover_every_set(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert set(results["K"]) == {"8", "16"}
    for k in ("8", "16"):
        per_k = results["K"][k]
        for name in ["dev", *TEST_SETS]:
            entry = per_k[name]
            assert {"hard", "soft", "continuous", "soft_vs_hard"} <= set(entry), name
            assert entry["soft"]["tau"] == sweep_choice(per_k["_tau_sweep"])  # None: soft(τ*) is hard
        l1_groups = [name for name in per_k if name.startswith("l2arctic_")]
        assert l1_groups and all(g.split("_", 1)[1] in {"arabic", "mandarin", "hindi", "korean", "spanish",
                                                         "vietnamese"} for g in l1_groups)
    assert set(results["training"]) == {"asr_hard_k8", "asr_hard_k16", "asr_continuous"}
    feats = load_yaml(smoke / "dump" / "hubert" / "train_clean_100" / "feats.yaml")
    assert "layer" in json.dumps(feats) and feats.get("dim") == 32
    md = (smoke / "RESULTS.md").read_text()
    for text in ("## K = 16", "tedlium2_test", "chime4_et05_simu", "split-attribute", "combine", "--layer 2"):
        assert text in md, text


def test_smoke_rankme_per_layer(smoke):
    """Stage 9: RankMe of each layer of the tiny 2-layer HuBERT on dev."""
    rankme = json.loads((smoke / "rankme.json").read_text())
    assert [r["layer"] for r in rankme["rows"]] == [1, 2] and rankme["source"]["utts"] == 6
    assert all(0 < r["rankme"] <= r["dim"] == 32 for r in rankme["rows"])
    md = (smoke / "RANKME.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2"], md
    assert (smoke / "rankme.png").is_file()
    assert "analyze rankme --data-dir" in (smoke / "exp" / "commands.txt").read_text()
    assert absolute_paths((smoke / "exp" / "commands.txt").read_text()) == []
    assert "## Commands" in md and "analyze rankme --data-dir" in md.split("## Commands")[1]


def test_smoke_recipe_multi_layer_tokens(smoke):
    """--layers "1 2": one dump folder and one k-means per layer, models on the comma lists (stages 3-8 again)."""
    root = smoke
    out = _run(root, root / "corpora", "--layers", "1 2", "--stage", "3", "--stop_stage", "8", "--dump",
               str(root / "dump_layers"), "--exp_dir", str(root / "exp_layers"), "--results_dir",
               str(root / "layers"), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for layer in (1, 2):
        feats = load_yaml(root / "dump_layers" / f"hubert_l{layer}" / "train_clean_100" / "feats.yaml")
        assert feats["layer"] == layer and feats["dim"] == 32
        for k in (8, 16):
            assert (root / "exp_layers" / "kmeans" / f"hubert_l{layer}_k{k}.npy").is_file()
    assert not (root / "dump_layers" / "hubert").exists()
    config = load_yaml(root / "exp_layers" / "asr_hard_k8" / "config.yaml")
    assert list(config["kmeans"]) == [str(root / "exp_layers" / "kmeans" / f"hubert_l{n}_k8.npy") for n in (1, 2)]
    results = json.loads((root / "layers" / "results.json").read_text())
    assert set(results["training"]) == {"asr_hard_k8", "asr_hard_k16", "asr_continuous"}
    for k in ("8", "16"):
        for name in ["dev", *TEST_SETS]:
            assert {"hard", "soft", "continuous"} <= set(results["K"][k][name]), name
    assert "--layer 1,2" in (root / "exp_layers" / "commands.txt").read_text()


def test_smoke_data_dirs(smoke):
    data = smoke / "data"
    assert len((data / "dev" / "wav.scp").read_text().splitlines()) == 6  # dev-clean 3 + dev-other 3
    assert (data / "tedlium2_test" / "segments").is_file()
    assert (data / "l2arctic" / "spk2l1").is_file()


def test_smoke_recipe_skips_done_stages_and_needs_a_checkpoint(smoke):
    out = _run(smoke, smoke / "corpora", timeout=120)
    assert out.returncode == 0 and out.stdout.count("done, skipping") == 10
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run([str(RECIPE), "--smoke", "true"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "--checkpoint" in out.stderr
