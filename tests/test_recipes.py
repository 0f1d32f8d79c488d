"""Corpus preparation on the real corpora, and the tokens recipe's stage script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import FSDD, REPO, SHARED_DATA, SPEECHOCEAN, needs_shared
from softtok.recipes.corpora import prepare_fsdd, prepare_speechocean762
from softtok.tokenizers.audio import read_utterance
from softtok.tokenizers.datadir import DataError, load_data_dir


@needs_shared
def test_prepare_speechocean762(tmp_path):
    dirs = prepare_speechocean762(SPEECHOCEAN, tmp_path / "data")
    test = load_data_dir(dirs["test"], require_text=True)
    assert len(test) == 2500 and len(load_data_dir(dirs["train"])) == 2500
    utt = test.utt_ids[0]
    assert os.path.isabs(test.wav_scp[utt]) and read_utterance(test, utt).numel() > 16000
    assert (dirs["test"] / "spk2age").is_file() and (dirs["test"] / "spk2utt").is_file()


@needs_shared
def test_prepare_fsdd(tmp_path):
    data = load_data_dir(prepare_fsdd(FSDD, tmp_path / "data")["fsdd"], require_text=True)
    assert len(data) == 3000 and data.text["george_7_03"] == "SEVEN" and data.utt2spk["george_7_03"] == "george"
    assert read_utterance(data, "george_7_03").numel() > 4000
    assert "German" in (tmp_path / "data" / "fsdd" / "spk2accent").read_text()


def test_prepare_refuses_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="is this a speechocean762 folder"):
        prepare_speechocean762(tmp_path, tmp_path / "out")
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "hello.wav").write_bytes(b"")
    with pytest.raises(DataError, match="hello.wav: expected <digit>_<speaker>_<index>"):
        prepare_fsdd(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # validation happens before anything is written


@needs_shared
def test_tokens_recipe_stage_options(tmp_path):
    """run.sh parses options, refuses unknown ones, and runs only the stages asked for."""
    script = REPO / "egs" / "speechocean762" / "tokens" / "run.sh"
    bad = subprocess.run([str(script), "--no_such_option", "1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown option --no_such_option" in bad.stderr
    exp = tmp_path / "exp"
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run([str(script), "--stop_stage", "1", "--exp_dir", str(exp), "--data", str(tmp_path / "data"),
                          "--data_root", str(SHARED_DATA)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (exp / ".done" / "stage1").exists() and not (exp / ".done" / "stage2").exists()
    again = subprocess.run([str(script), "--stop_stage", "1", "--exp_dir", str(exp)],
                           capture_output=True, text=True,
                           env=env)
    assert "stage 1 (prepare data dirs): done, skipping" in again.stdout
