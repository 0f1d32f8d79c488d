"""tools/gpu_check.sh keeps working: its dry run (every step at tiny sizes on the CPU, the wheel install included)
renders a full report, a failing or overlong step is recorded and the next one runs, and the committed
bench/GPU.md is what the renderer makes of bench/gpu.json."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

BENCH = REPO / "bench"


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel of one module, for the script's install path."""
    folder.mkdir(parents=True)
    wheel = folder / "gpucheckprobe-0.1-py3-none-any.whl"
    info = "gpucheckprobe-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gpucheckprobe.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return folder


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run of the whole script, its tiny wheel installed first."""
    root = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--dry-run", "--install", "--wheels",
                           str(tiny_wheel(root / "whl")), "--site", str(root / "site"), "--out-dir", str(root / "out"),
                           "--work", str(root / "work")], capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"out": root / "out", "site": root / "site", "seconds": time.perf_counter() - t0,
            "json": json.loads((root / "out" / "gpu.json").read_text()),
            "md": (root / "out" / "GPU.md").read_text()}


def test_dry_run_writes_three_files_and_installs_the_wheels(dry_run):
    assert sorted(p.name for p in dry_run["out"].iterdir()) == ["GPU.md", "gpu.json", "gpu_check.log"]
    install = dry_run["json"]["install"]
    assert install["status"] == "ok" and install["wheels"] == ["gpucheckprobe-0.1-py3-none-any.whl"]
    assert (dry_run["site"] / "gpucheckprobe.py").is_file() and install["seconds"] > 0
    assert re.search(r"1 wheels \(0\.0 MiB\) from `.*whl`, `pip install --no-index --no-deps --target` in "
                     r"[\d.]+ s: ok\. gpucheckprobe-0\.1", dry_run["md"])


def test_dry_run_runs_every_step_through_the_real_code(dry_run):
    steps = dry_run["json"]["steps"]
    assert list(steps) == ["env", "heads", "asr", "hifigan", "ddp", "kmeans"]
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(steps, "ok")
    res = {name: s["result"] for name, s in steps.items()}
    assert res["env"]["torch"] and res["env"]["versions"]["espnet"]
    assert set(res["heads"]["heads"]["K"]) == {"16", "32"}
    assert set(res["heads"]["embedding"]["32"]) == {"hard", "soft_dense", "soft_top4", "fused"}
    assert res["heads"]["embedding"]["32"]["fused"]["max_abs_diff_vs_soft_dense"] < 1e-4
    for train in (res["asr"]["train"], res["hifigan"]["train"], res["ddp"]["asr"], res["ddp"]["hifigan"]):
        assert train["steps"] >= 3 and train["timed"] >= 1 and train["median_s"] > 0
    assert len(res["asr"]["sweep"]["rows"]) == 8 and res["asr"]["sweep"]["hard"]["seconds"] >= 0
    assert res["ddp"]["backend"] == "gloo" and res["ddp"]["world_size"] == 1 and res["ddp"]["torchrun"]
    assert res["ddp"]["asr"]["wrapped_as"] == ["DistributedDataParallel"]
    assert res["ddp"]["hifigan"]["wrapped_as"] == ["DistributedDataParallel"] * 2  # generator and discriminator
    rows = [(r["backend"], r["K"]) for r in res["kmeans"]["rows"]]
    assert rows == [("torch", 16), ("torch", 32), ("faiss", 16), ("faiss", 32)]


def test_dry_run_report_says_what_it_is_and_holds_every_section(dry_run):
    md = dry_run["md"]
    assert md.startswith("# GPU check\n\n**Dry run**") and "No figure below is a GPU measurement" in md
    assert "Command: `bash tools/gpu_check.sh --dry-run --install" in md
    for title in ("## Install", "## Steps", "## Heads", "## ASR trainer", "## HiFi-GAN unit vocoder",
                  "## DDP under torchrun", "## k-means", "## How to run"):
        assert f"\n{title}" in md, title
    assert re.search(r"\| 32 \| fused \| – \| [\d,]+ \| [\d.]+ \| – \|", md)  # embedding row; no CUDA peak on a CPU
    assert re.search(r"\| [\d.]+ \| 400 \| [\d,]+ \| \d+ \(\d+\) \| [\d.e-]+ \| [\d.e-]+ \| – \| [\d.]+ \|", md)  # ASR
    assert len(re.findall(r"^\| (hard|0\.\d+|1\.0) \| [^|]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d,]+ \|$", md, re.M)) == 9
    assert "| asr | DistributedDataParallel |" in md and "a one-rank `gloo` process group" in md
    assert re.search(r"\| torch \| cpu \| 32 \| 3,000 \| [\d.]+ \|", md)
    assert "faiss-gpu is not measured" in md  # faiss-cpu here: the report says why no faiss GPU row


def test_a_failing_and_an_overlong_step_are_recorded_and_the_next_runs(tmp_path):
    check = bench_module("gpu_check")
    log = tmp_path / "log"
    log.write_text("")
    failed = check.run_step([sys.executable, "-c", "import sys; print('broken input'); sys.exit(3)"], 30, log)
    assert failed["status"] == "failed (exit 3)" and "broken input" in failed["tail"]
    t0 = time.perf_counter()
    slow = check.run_step([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                                                 "'import time; time.sleep(60)']); print('never')"], 1.5, log)
    assert slow["status"] == "timed out after 2 s" and time.perf_counter() - t0 < 20  # child killed with its group
    ok = check.run_step([sys.executable, "-c", "print('fine')"], 30, log)
    assert ok["status"] == "ok" and ok["tail"] == "" and log.read_text().count("====") == 3
    steps = check.run_steps(["env"], tmp_path, log, dry=True, deadline=time.time() + 5)
    assert steps["env"]["status"].startswith("skipped: ")  # less than a step's minimum left of the budget


def test_committed_report_is_the_rendering_of_the_committed_json():
    report = bench_module("gpu_report")
    results = json.loads((BENCH / "gpu.json").read_text())
    assert (BENCH / "GPU.md").read_text() == report.render_markdown(results)
    if results["state"] == "not run":
        assert "No GPU run has happened yet" in (BENCH / "GPU.md").read_text()
    else:
        assert results["state"] == "measured" and result_gpu(results)


def result_gpu(results: dict) -> str:
    """The GPU the committed figures were measured on (a dry run's report must not be committed as GPU.md)."""
    return results["steps"]["env"]["result"]["gpu"]
