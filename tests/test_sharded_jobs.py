"""Scale-out: sharded label dumping, --merge after array jobs, the local/slurm launcher, faiss on GPUs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from softtok.cli import main
from softtok.tokenizers.dump_features import dump_features, plan_shards
from softtok.tokenizers.fileio import load_scp_dict, load_yaml
from softtok.tokenizers.jobs import run_dump_tokens, run_learn_kmeans


@pytest.fixture
def tone_feats(tmp_path, tone_dir) -> Path:
    """mfcc features (feats.scp) of the three synthetic utterances."""
    dump_features(str(tone_dir), "mfcc", str(tmp_path / "feats"))
    return tmp_path / "feats" / "feats.scp"


@pytest.fixture
def tone_km(tmp_path, tone_feats) -> Path:
    """A K=4 codebook of those features."""
    km = tmp_path / "km" / "k4.npy"
    run_learn_kmeans(str(tone_feats), 4, "sklearn", str(km), n_init=1)
    return km


def test_plan_shards():
    assert plan_shards(10, nj=3) == ([0, 1, 2], 3)
    assert plan_shards(2, nj=4) == ([0, 1], 2)  # never more local shards than items
    assert plan_shards(2, shard="3/4") == ([3], 4)  # an array task keeps its N
    assert plan_shards(2, merge=4) == ([], 4)
    for kwargs in ({"nj": 2, "shard": "0/2"}, {"shard": "0/2", "merge": 2}, {"nj": 0}, {"merge": 0}):
        with pytest.raises(ValueError, match="--nj|--merge"):
            plan_shards(5, **kwargs)


def _read_tokens(path: Path) -> dict:
    return {line.split()[0]: line.split()[1:] for line in path.read_text().splitlines()}


def test_sharded_hard_tokens_equal_single_and_resume(tmp_path, tone_feats, tone_km):
    one = run_dump_tokens(str(tone_feats), str(tone_km), "hard", str(tmp_path / "one"))
    two = run_dump_tokens(str(tone_feats), str(tone_km), "hard", str(tmp_path / "two"), nj=2)
    assert one["utts"] == two["utts"] == 3 and one["frames"] == two["frames"] > 100
    a, b = (tmp_path / "one" / "tokens.txt").read_text(), (tmp_path / "two" / "tokens.txt").read_text()
    assert a == b and list(_read_tokens(tmp_path / "two" / "tokens.txt")) == ["utt_a", "utt_b", "utt_c"]
    assert load_yaml(tmp_path / "two" / "tokens.yaml")["nshard"] == 2
    # Resume: a finished shard is skipped; a shard done with other settings (dedup) is redone.
    shard0 = tmp_path / "two" / "shards" / "tokens_0_2.txt"
    mtime = shard0.stat().st_mtime_ns
    run_dump_tokens(str(tone_feats), str(tone_km), "hard", str(tmp_path / "two"), nj=2)
    assert shard0.stat().st_mtime_ns == mtime
    run_dump_tokens(str(tone_feats), str(tone_km), "hard", str(tmp_path / "two"), nj=2, dedup_ids=True)
    dedup = _read_tokens(tmp_path / "two" / "tokens.txt")
    assert sum(map(len, dedup.values())) < one["frames"] and load_yaml(tmp_path / "two" / "tokens.yaml")["dedup"]


def test_array_token_shards_and_merge(tmp_path, tone_feats, tone_km):
    out = tmp_path / "arr"
    kw = dict(tau=50.0, top_k=2)
    first = run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(out), shard="2/3", **kw)
    assert "utts" not in first and not (out / "tokens.scp").exists()  # waits for the other shards
    with pytest.raises(ValueError, match=r"cannot merge 3 shards: 2 not done .*tokens_0_3.done"):
        run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(out), merge=3, **kw)
    run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(out), shard="0/3", **kw)
    run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(out), shard="1/3", **kw)
    merged = run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(out), merge=3, **kw)
    assert merged["utts"] == 3 and merged["shards"] == 3
    single = run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(tmp_path / "single"), **kw)
    a, b = load_scp_dict(out / "tokens.scp"), load_scp_dict(tmp_path / "single" / "tokens.scp")
    assert list(a) == list(b) == ["utt_a", "utt_b", "utt_c"] and single["frames"] == merged["frames"]
    assert all(np.array_equal(a[k], b[k]) and a[k].shape[1] == 4 for k in a)
    # Merging with other settings (another τ) refuses: those shards were not made with it.
    with pytest.raises(ValueError, match="3 not done"):
        run_dump_tokens(str(tone_feats), str(tone_km), "soft", str(out), merge=3, tau=5.0, top_k=2)


def test_feature_merge_refuses_missing_shards(tmp_path, tone_dir, caplog):
    out = tmp_path / "f"
    dump_features(str(tone_dir), "mfcc", str(out), shard="0/2")
    argv = ["dump-features", "--data-dir", str(tone_dir), "--feature", "mfcc", "--out-dir", str(out), "--merge", "2"]
    assert main(argv) == 1
    assert "cannot merge 2 shards: 1 not done" in caplog.text and "feats_1_2.done" in caplog.text
    assert not (out / "feats.scp").exists()
    dump_features(str(tone_dir), "mfcc", str(out), shard="1/2")
    (out / "feats.scp").unlink()  # as if the last task's own merge were lost (e.g. NFS caching)
    assert main(argv) == 0 and list(load_scp_dict(out / "feats.scp")) == ["utt_a", "utt_b", "utt_c"]
    assert load_yaml(out / "feats.yaml")["nshard"] == 2


# ----------------------------------------------------------------------------- launcher (local / slurm)
FAKE_SBATCH = '''#!{python}
"""Fake sbatch: runs every task of the script's #SBATCH --array at once, with SLURM_ARRAY_TASK_ID set and its
output in #SBATCH --output (%a = task id); with --wait, exits with the highest task exit status."""
import os, re, subprocess, sys
with open(os.path.join(os.path.dirname(__file__), "calls"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
script = sys.argv[-1]
opts = dict(re.findall(r"^#SBATCH --([a-z-]+)=(\\S+)", open(script).read(), re.M))
lo, hi = map(int, opts["array"].split("%")[0].split("-"))
procs = [subprocess.Popen(["bash", script], env={{**os.environ, "SLURM_ARRAY_TASK_ID": str(i)}},
                          stdout=open(opts["output"].replace("%a", str(i)), "w"), stderr=subprocess.STDOUT)
         for i in range(lo, hi + 1)]
codes = [p.wait() for p in procs]
print("Submitted batch job 42")
sys.exit(max(codes) if "--wait" in sys.argv else 0)
'''


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """A fake ``sbatch`` first on PATH; returns the file its command lines are appended to."""
    import os
    import sys

    from conftest import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{os.environ.get('PYTHONPATH', '')}")  # tasks import this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return bin_dir / "calls"


def _softtok(*args: str) -> list:
    import sys

    return [sys.executable, "-m", "softtok.cli", *args]


def test_sbatch_script_lines(tmp_path):
    from softtok.recipes.launch import SlurmConf, sbatch_script

    conf_file = tmp_path / "slurm.yaml"
    conf_file.write_text("partition: gpu\ngpus: 2\ncpus_per_task: 4\nmem: 16G\ntime: '04:00:00'\n"
                         "max_parallel: 3\nextra: [--account=speech]\n")
    command = ["python", "-m", "softtok.cli", "dump-features", "--data-dir", "data/my set", "--out-dir", "dump/x"]
    lines = sbatch_script(command, 8, "dump_train", tmp_path / "log", SlurmConf.load(str(conf_file)),
                          tmp_path).splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[1].startswith("# softtok.recipes.launch: dump_train, 8 array tasks; then `python -m softtok.cli")
    assert lines[1].endswith("--out-dir dump/x --merge 8`")
    assert lines[2:] == [
        "#SBATCH --job-name=dump_train",
        "#SBATCH --array=0-7%3",
        f"#SBATCH --output={tmp_path}/log/dump_train.%a.log",
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH --time=04:00:00",
        "#SBATCH --account=speech",
        "set -euo pipefail",
        f"cd {tmp_path}",
        'echo "# task ${SLURM_ARRAY_TASK_ID}/8 on $(hostname), $(date -u +%FT%TZ)"',
        "python -m softtok.cli dump-features --data-dir 'data/my set' --out-dir dump/x "
        '--shard "${SLURM_ARRAY_TASK_ID}/8"',
        'echo "# softtok task done"']
    plain = sbatch_script(["true"], 1, "j", tmp_path, SlurmConf(), tmp_path).splitlines()
    assert [x for x in plain if x.startswith("#SBATCH")] == [
        "#SBATCH --job-name=j", "#SBATCH --array=0-0", f"#SBATCH --output={tmp_path}/j.%a.log"]


def test_example_slurm_conf_and_errors(tmp_path):
    from conftest import REPO
    from softtok.recipes.launch import SlurmConf, launch

    example = SlurmConf.load(str(REPO / "egs" / "tools" / "slurm.yaml"))
    assert example.gpus == 1 and example.time == "04:00:00" and "--gres=gpu:1" in example.directives()
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: gpu\ngpu: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown slurm option 'gpu'"):
        SlurmConf.load(str(bad))
    with pytest.raises(ValueError, match="leave --nj/--shard/--merge to the launcher"):
        launch(["softtok", "dump-features", "--nj", "4"], "local", 2, "j", str(tmp_path))
    with pytest.raises(ValueError, match="no command"):
        launch([], "slurm", 2, "j", str(tmp_path))


def test_slurm_dump_equals_local_nj2(tmp_path, tone_dir, fake_sbatch):
    from softtok.recipes.launch import main as launch_main

    def run(cmd: str, out: str) -> int:
        return launch_main(["--cmd", cmd, "--nj", "2", "--log-dir", str(tmp_path / "log"), "--name", f"dump_{cmd}",
                            "--", *_softtok("dump-features", "--data-dir", str(tone_dir), "--feature", "mfcc",
                                            "--out-dir", str(tmp_path / out))])

    assert run("local", "local") == 0 and not fake_sbatch.exists()
    assert run("slurm", "slurm") == 0
    assert fake_sbatch.read_text() == f"--wait {tmp_path}/log/dump_slurm.sbatch\n"
    local = (tmp_path / "local" / "feats.scp").read_text()
    slurm = (tmp_path / "slurm" / "feats.scp").read_text()
    assert slurm == local.replace(str(tmp_path / "local"), str(tmp_path / "slurm"))  # same keys, shards, offsets
    assert len(local.splitlines()) == 3 and load_yaml(tmp_path / "slurm" / "feats.yaml")["nshard"] == 2
    a, b = load_scp_dict(tmp_path / "local" / "feats.scp"), load_scp_dict(tmp_path / "slurm" / "feats.scp")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    for rank in (0, 1):
        log = (tmp_path / "log" / f"dump_slurm.{rank}.log").read_text()
        assert f"# task {rank}/2 on " in log and log.rstrip().endswith("# softtok task done")


def test_slurm_token_dump(tmp_path, tone_feats, tone_km, fake_sbatch):
    from softtok.recipes.launch import launch

    args = ("dump-tokens", "--feats", str(tone_feats), "--kmeans", str(tone_km), "--head", "hard")
    launch(_softtok(*args, "--out-dir", str(tmp_path / "slurm")), "slurm", 2, "tok", str(tmp_path / "log"))
    run_dump_tokens(str(tone_feats), str(tone_km), "hard", str(tmp_path / "single"))
    assert (tmp_path / "slurm" / "tokens.txt").read_text() == (tmp_path / "single" / "tokens.txt").read_text()
    assert sorted(p.name for p in (tmp_path / "slurm" / "shards").iterdir()) == [
        "tokens_0_2.done", "tokens_0_2.txt", "tokens_1_2.done", "tokens_1_2.txt"]


def test_slurm_failing_task(tmp_path, tone_dir, fake_sbatch, caplog):
    from softtok.recipes.launch import main as launch_main

    (tone_dir / "audio" / "c.wav").write_bytes(b"not audio")  # utt_c: the only utterance of shard 1/2
    argv = ["--cmd", "slurm", "--nj", "2", "--log-dir", str(tmp_path / "log"), "--name", "dump",
            "--", *_softtok("dump-features", "--data-dir", str(tone_dir), "--feature", "mfcc",
                            "--out-dir", str(tmp_path / "out"))]
    assert launch_main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "array job dump: 1 of 2 tasks did not finish" in errors[0]
    assert f"(see {tmp_path}/log/dump.1.log); sbatch failed (exit 1)" in errors[0]
    assert "'utt_c'" in (tmp_path / "log" / "dump.1.log").read_text()  # the task's own error
    assert (tmp_path / "out" / "shards" / "feats_0_2.done").exists()
    assert not (tmp_path / "out" / "feats.scp").exists()  # nothing merged


def test_slurm_dry_run_only_writes_the_script(tmp_path, fake_sbatch):
    from softtok.recipes.launch import launch

    summary = launch(["softtok", "dump-features", "--data-dir", "d"], "slurm", 3, "j", str(tmp_path / "log"),
                     dry_run=True)
    assert summary["submitted"] is False and "#SBATCH --array=0-2" in (tmp_path / "log" / "j.sbatch").read_text()
    assert not fake_sbatch.exists()


def test_stage_sh_run_sharded(tmp_path, tone_dir, fake_sbatch):
    """Recipes take --cmd/--slurm_conf; run_sharded runs CMD --nj locally or submits the array job."""
    import subprocess
    import sys

    from conftest import REPO

    conf = tmp_path / "slurm.yaml"
    conf.write_text("mem: 2G\n")
    script = tmp_path / "run.sh"
    script.write_text(f"set -euo pipefail\nnj=2\nexp_dir={tmp_path}/exp\npy={sys.executable}\n"
                      f". {REPO}/egs/tools/stage.sh \"$@\"\n"
                      f"run_sharded feats $py -m softtok.cli dump-features --data-dir {tone_dir} --feature mfcc "
                      f"--out-dir {tmp_path}/$cmd\n")
    local = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert local.returncode == 0, local.stderr[-2000:]
    assert f"--out-dir {tmp_path}/local --nj 2" in local.stdout and not fake_sbatch.exists()
    slurm = subprocess.run(["bash", str(script), "--cmd", "slurm", "--slurm_conf", str(conf)],
                           capture_output=True, text=True)
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert "#SBATCH --mem=2G" in (tmp_path / "exp" / "log" / "feats.sbatch").read_text()
    assert (tmp_path / "slurm" / "feats.scp").read_text() == \
        (tmp_path / "local" / "feats.scp").read_text().replace(f"{tmp_path}/local", f"{tmp_path}/slurm")


def test_no_sbatch_is_one_clear_error(tmp_path, monkeypatch):
    from softtok.recipes.launch import LaunchError, launch

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    with pytest.raises(LaunchError, match="sbatch: command not found .not a Slurm login node"):
        launch(["softtok", "dump-features"], "slurm", 2, "j", str(tmp_path / "log"))


# ----------------------------------------------------------------------------- faiss k-means on GPUs
def _faiss_gpu_build() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources")


def _blobs(k: int = 4, n_per: int = 300, dim: int = 8) -> tuple:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10.0, size=(k, dim)).astype(np.float32)
    return np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32), centres


@pytest.mark.skipif(_faiss_gpu_build(), reason="checks the error of a CPU-only faiss build")
def test_faiss_gpu_on_faiss_cpu_is_one_clear_error(tmp_path, tone_feats, caplog):
    from softtok.tokenizers.kmeans import faiss_gpus, learn_kmeans

    assert faiss_gpus(None) == 0 and faiss_gpus(False) == 0 and faiss_gpus(0) == 0  # auto / off: the CPU
    x, centres = _blobs()
    cpu = learn_kmeans(x, 4, backend="faiss", gpu=False)
    assert np.linalg.norm(cpu.centroids[:, None] - centres[None], axis=2).min(axis=0).max() < 0.5
    for gpu, asked in ((True, "all GPUs"), (-1, "all GPUs"), (2, "2 GPU.s.")):
        with pytest.raises(ValueError, match=f"gpu={gpu!r} asks for {asked} but this faiss .* is a CPU-only build"):
            learn_kmeans(x, 4, backend="faiss", gpu=gpu)
    with pytest.raises(ValueError, match="gpu must be true, false or a number of GPUs, got 'yes'"):
        learn_kmeans(x, 4, backend="faiss", gpu="yes")
    out = tmp_path / "km.npy"
    assert main(["learn-kmeans", "--feats", str(tone_feats), "--n-clusters", "4", "--kmeans-conf", "{gpu: true}",
                 "--out", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "CPU-only build (faiss-cpu" in errors[0] and "\n" not in errors[0]
    assert not out.exists()


@pytest.mark.skipif(not _faiss_gpu_build(), reason="needs faiss-gpu and a CUDA GPU")
def test_faiss_kmeans_on_all_gpus(caplog):
    import faiss

    from softtok.tokenizers.kmeans import faiss_gpus, learn_kmeans

    if faiss.get_num_gpus() == 0:
        pytest.skip("faiss-gpu sees no GPU")
    caplog.set_level("INFO")
    assert faiss_gpus(True) == faiss.get_num_gpus() == faiss_gpus(None)
    x, centres = _blobs(k=16, dim=32)
    gpu = learn_kmeans(x, 16, backend="faiss", gpu=True)
    assert f"faiss k-means on {faiss.get_num_gpus()} GPU(s)" in caplog.text
    cpu = learn_kmeans(x, 16, backend="faiss", gpu=False)
    assert np.linalg.norm(gpu.centroids[:, None] - centres[None], axis=2).min(axis=0).max() < 0.5
    assert gpu.meta["inertia"] == pytest.approx(cpu.meta["inertia"], rel=0.01)
    with pytest.raises(ValueError, match=f"asks for {faiss.get_num_gpus() + 1} GPU.s. but faiss sees"):
        learn_kmeans(x, 16, backend="faiss", gpu=faiss.get_num_gpus() + 1)


def test_stopping_a_slurm_launch_cancels_its_array_job(tmp_path):
    """SIGTERM to `softtok launch --cmd slurm` while `sbatch --wait` waits: the array is scancel'ed by its name."""
    import os
    import signal
    import subprocess
    import sys
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scancel_calls"
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexec sleep 60\n")
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    for tool in ("sbatch", "scancel"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "softtok.cli", "launch", "--cmd", "slurm", "--nj", "2", "--name",
                             "dumpjob", "--log-dir", str(tmp_path / "log"), "--", "softtok", "dump-features",
                             "--data-dir", "d", "--feature", "mfcc", "--out-dir", "o"], env=env)
    script = tmp_path / "log" / "dumpjob.sbatch"
    deadline = time.time() + 60
    while not script.is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # sbatch --wait is running
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert calls.read_text().split() == ["--name=dumpjob", f"--user={__import__('getpass').getuser()}"]
