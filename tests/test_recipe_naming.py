"""Names and defaults the recipes take from Python (softtok.recipes.naming), and the command log of stage.sh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from softtok.recipes.naming import codebook_name, codebook_paths, relative_command, tokenizer_settings


def test_codebook_names():
    assert codebook_name("whisper", 128) == "whisper_k128.npy"
    assert codebook_name("fbank", 16, "dmel") == "dmel_fbank_k16.npy"
    assert codebook_name("hubert", 500, layer=9) == "hubert_l9_k500.npy"
    assert codebook_paths("exp/kmeans", "hubert", 8, layers=[1, 2]) == ["exp/kmeans/hubert_l1_k8.npy",
                                                                         "exp/kmeans/hubert_l2_k8.npy"]
    assert codebook_paths("", "whisper", 128) == ["whisper_k128.npy"]
    with pytest.raises(ValueError, match="tokenizer 'dmel' takes no layers"):
        codebook_name("fbank", 16, "dmel", layer=3)
    with pytest.raises(ValueError, match="--tokenizer must be one of kmeans, dmel, got 'vq'"):
        codebook_name("fbank", 16, "vq")


def test_tokenizer_settings():
    """dMel: fbank always, 16 bins unless given (always in smoke runs), its own folders unless given."""
    given = {"feature": "whisper", "ks": "", "exp_dir": "", "results_dir": ""}
    assert tokenizer_settings("kmeans", **given) == {"feature": "whisper", "ks": "", "exp_dir": "exp",
                                                     "results_dir": "."}
    assert tokenizer_settings("dmel", **given) == {"feature": "fbank", "ks": "16", "exp_dir": "exp_dmel",
                                                   "results_dir": "results_dmel"}
    mine = {"feature": "whisper", "ks": "8 32", "exp_dir": "e", "results_dir": "r"}
    assert tokenizer_settings("dmel", **mine) == {"feature": "fbank", "ks": "8 32", "exp_dir": "e",
                                                  "results_dir": "r"}
    assert tokenizer_settings("dmel", **mine, smoke=True)["ks"] == "16"
    assert tokenizer_settings("kmeans", **mine, smoke=True) == mine


def test_relative_command(tmp_path):
    base = tmp_path / "egs" / "x"
    words = ["/usr/bin/python3", "-m", "softtok.cli", "asr", "train", "--exp-dir", f"{tmp_path}/exp/a",
             f"--kmeans={tmp_path}/k1.npy,{tmp_path}/k2.npy", "--feats", f"rel/f.scp,{base}/f.scp", "{tau: 2}"]
    assert relative_command(words, str(base)) == ("python3 -m softtok.cli asr train --exp-dir ../../exp/a "
                                                  "--kmeans=../../k1.npy,../../k2.npy --feats rel/f.scp,f.scp '{tau: 2}'")
    assert relative_command([]) == ""


def test_stage_sh_records_commands_relative_to_the_recipe(tmp_path):
    """log/log_bg/commands_log write every absolute path relative to the recipe folder; the command itself runs
    with its arguments as given."""
    recipe = tmp_path / "egs" / "r"
    recipe.mkdir(parents=True)
    out = tmp_path / "out dir"
    script = recipe / "run.sh"
    script.write_text(f"set -euo pipefail\ncd \"$(dirname \"$0\")\"\nstage=1\nstop_stage=1\nexp_dir={tmp_path}/exp\n"
                      f"data={tmp_path}/data\npy={sys.executable}\n"
                      f". {REPO}/egs/tools/stage.sh \"$@\"\n"
                      "commands_log \"$exp_dir/commands.txt\" egs/r/run.sh \"$@\"\n"
                      f"mkdir -p \"{out}\"\nlog echo ran --opt=$data/a,$data/b\n"
                      f"log_bg $py -c 'import sys; open(sys.argv[1], \"w\").write(sys.argv[1])' \"{out}/x.txt\"\n"
                      "wait_bg\n")
    run = subprocess.run(["bash", str(script), "--exp_dir", f"{tmp_path}/exp"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "x.txt").read_text() == f"{out}/x.txt"
    assert f"ran --opt={tmp_path}/data/a,{tmp_path}/data/b\n" in run.stdout
    lines = (tmp_path / "exp" / "commands.txt").read_text().splitlines()
    assert lines[0].startswith("# ") and lines[0].endswith(" egs/r/run.sh --exp_dir ../../exp")
    assert lines[1:] == ["echo ran --opt=../../data/a,../../data/b",
                         f"{os.path.basename(sys.executable)} -c 'import sys; open(sys.argv[1], \"w\").write(sys.argv[1])' "
                         "'../../out dir/x.txt'"]
    assert str(tmp_path) not in "\n".join(lines)


def test_recipe_verb_errors_are_one_line():
    out = subprocess.run([sys.executable, "-m", "softtok.cli", "recipe", "tokenizer-settings", "--tokenizer", "vq"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip() == \
        "error: tokenizer-settings: --tokenizer must be one of kmeans, dmel, got 'vq'"
