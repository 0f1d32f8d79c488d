"""egs/ljspeech/voc in --smoke mode with the HiFi-GAN smoke config: LJSpeech + TIMIT fixture trees, tiny HuBERT tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, absolute_paths, logged_commands, needs_whisper
from corpus_fixtures import make_ljspeech, make_timit, tiny_hubert
from softtok.tokenizers.tau import sweep_choice
from softtok.recipes.corpora.ljspeech import prepare_ljspeech
from softtok.tokenizers.datadir import DataError, load_data_dir
from test_voc_recipe import needs_vocoder

RECIPE = REPO / "egs" / "ljspeech" / "voc" / "run.sh"


def _run(root: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    argv = [str(RECIPE), "--smoke", "true", "--ljspeech", str(root / "LJSpeech-1.1"), "--timit", str(root / "TIMIT"),
            "--feature", "hubert", "--checkpoint", str(root / "hubert"), "--layer", "2",
            "--data", str(root / "data"), "--dump", str(root / "dump"), "--exp_dir", str(root / "exp"),
            "--results_dir", str(root)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("lj_smoke")
    make_ljspeech(root)
    make_timit(root)
    tiny_hubert(root / "hubert")
    out = _run(root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root


@needs_whisper
@needs_vocoder
def test_smoke_hifigan_recipe_results(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert results["K"] == [16] and results["sets"] == {"test_id": "id", "test_ood": "ood"}
    sweep = results["vocoders"]["hifigan"]["tau_sweeps"]["16"]
    assert sweep["set"] == "dev"
    for name in ("test_id", "test_ood"):
        table = results["tables"][name]
        rows = {r["condition"]: r for r in table["rows"]}
        assert {"hifigan_hard_k16", "hifigan_soft_k16", "hifigan_continuous"} <= set(rows) and table["n_utts"] == 3
        assert rows["hifigan_soft_k16"]["tau"] == sweep_choice(sweep)  # None where no τ beat hard: soft is hard
    assert set(results["training"]) == {"voc_hifigan_hard_k16", "voc_hifigan_continuous"}
    data = smoke / "data"
    assert [len(load_data_dir(data / s)) for s in ("train", "dev", "test_id", "test_ood")] == [6, 3, 3, 3]
    assert all(u.split("_")[1] != "SA1" for u in load_data_dir(data / "test_ood").utt_ids)  # TIMIT SA skipped
    md = (smoke / "RESULTS.md").read_text()
    for text in ("voc-data ljspeech", "voc-data timit", "subset-data --src", "voc train --vocoder hifigan",
                 "hifigan soft (τ*) K=16", "## Conversion into the target voice"):
        assert text in md, text
    assert absolute_paths(logged_commands(smoke / "RESULTS.md")) == []  # the fixture trees' paths made relative


@needs_whisper
@needs_vocoder
def test_smoke_recipe_skips_done_stages(smoke):
    out = _run(smoke, timeout=120)
    assert out.returncode == 0 and out.stdout.count("done, skipping") == 9


def test_ljspeech_dev_split(tmp_path):
    corpus = make_ljspeech(tmp_path, n=12)
    dirs = prepare_ljspeech(corpus, tmp_path / "data", n_test=3, n_dev=3)
    sizes = {name: len(load_data_dir(d)) for name, d in dirs.items()}
    assert sizes == {"train": 6, "dev": 3, "test_id": 3}
    utts = [set(load_data_dir(d).utt_ids) for d in dirs.values()]
    assert not (utts[0] & utts[1]) and not (utts[1] & utts[2]) and not (utts[0] & utts[2])
    assert set(prepare_ljspeech(corpus, tmp_path / "data2", n_test=3)) == {"train", "test_id"}
    with pytest.raises(DataError, match="n_dev must be"):
        prepare_ljspeech(corpus, tmp_path / "data3", n_test=3, n_dev=9)
