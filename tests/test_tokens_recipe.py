"""The tokens recipe's stage script (egs/speechocean762/tokens/run.sh): options, stage selection, skipping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import REPO, SHARED_DATA, needs_shared


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
    same = ["--exp_dir", str(exp), "--data", str(tmp_path / "data"), "--data_root", str(SHARED_DATA)]
    again = subprocess.run([str(script), "--stop_stage", "1", *same], capture_output=True, text=True, env=env)
    assert "stage 1 (prepare data dirs): done, skipping" in again.stdout  # same options (the stop stage is none)
