"""Recipe stage markers (egs/tools/stage.sh) decide reuse by the options a stage ran with, not by path alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import REPO

RUN_SH = """#!/usr/bin/env bash
set -euo pipefail
stage=0 stop_stage=9 exp_dir={exp} layer=4 tag=a nj=1
. {stage_sh} "$@"
if run_stage 1 "dump"; then echo "dumping layer $layer" >> {exp}/work.log; mark_done 1; fi
"""


def run(script: Path, *args: str) -> str:
    out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, check=True)
    return out.stdout


def test_a_stage_reruns_when_its_options_change_and_skips_when_they_do_not(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    script = tmp_path / "run.sh"
    script.write_text(RUN_SH.format(exp=exp, stage_sh=REPO / "egs" / "tools" / "stage.sh"))
    assert "== stage 1: dump" in run(script, "--layer", "4")
    assert "done, skipping" in run(script, "--layer", "4")
    assert "done, skipping" in run(script, "--layer", "4", "--nj", "3", "--stop_stage", "5")  # how to run: no setting
    assert "done before with other options: running again" in run(script, "--layer", "2", "--tag", "b")
    assert "done, skipping" in run(script, "--tag", "b", "--layer", "2")  # their order does not matter
    assert "done before with other options" in run(script)  # the defaults are other settings than --layer 2
    assert (exp / "work.log").read_text().splitlines() == ["dumping layer 4", "dumping layer 2", "dumping layer 4"]
    assert sorted(p.name for p in (exp / ".done").iterdir()) == ["stage1"]  # no temp marker left
