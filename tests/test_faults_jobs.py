"""Hangs and leftovers (issue 15, class 3): killed workers and parents, temp files of dead runs, FIFOs and devices
as input, and two runs into one output folder.

Before: a worker killed as the OOM killer would left ``--nj N`` waiting forever; SIGTERM to the parent left its
workers running to the end; ``*.tmp.<pid>`` files stayed for good; a FIFO in wav.scp or feats.scp blocked forever;
two runs into one folder interleaved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest

from conftest import write_wave
from softtok.common import JobError
from softtok.tokenizers.datadir import copy_data_dir, write_data_dir
from softtok.tokenizers.dump_features import dump_features
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.jobs import run_dump_tokens, run_learn_kmeans
from softtok.tokenizers.outdir import OutputBusy, pid_alive
from softtok.tokenizers.workers import run_workers
from worker_bodies import job

pytestmark = pytest.mark.usefixtures("one_thread")

FBANK4 = {"num_mel_bins": 4}  # cheap to write; ~2 s of work per shard below


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocked open() or read()."""
    def timeout(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def leftovers(folder: Path) -> List[str]:
    """Temp files and lock files under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp." in p.name or p.name.endswith(".lock"))


def cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "softtok.cli", *args]


def temp_pid(shards: Path, prefix: str, proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Wait until a worker's ``<prefix>.tmp.<pid>`` appears; its pid."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = list(shards.glob(f"{prefix}.tmp.*")) if shards.is_dir() else []
        if found:
            return int(found[0].name.rsplit(".", 1)[1])
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.005)
    raise TimeoutError(f"no {prefix}.tmp.* in {shards}")


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    """240 utterances of 20 s (one noise file), two shards of ~2 s of fbank work each."""
    root = tmp_path_factory.mktemp("long")
    noise = write_wave(root / "noise.wav", 0.1 * np.random.default_rng(0).standard_normal(20 * 16000))
    return write_data_dir(root / "data", {f"u{i:03d}": str(noise) for i in range(240)})


@pytest.fixture(scope="module")
def reference(long_dir, tmp_path_factory) -> Path:
    """An uninterrupted two-shard dump of ``long_dir`` (the shards one after the other, in this process)."""
    out = tmp_path_factory.mktemp("ref") / "feats"
    for rank in (0, 1):
        dump_features(str(long_dir), "fbank", str(out), shard=f"{rank}/2", **FBANK4)
    return out


def assert_same_dump(out: Path, ref: Path) -> None:
    """Byte for byte the reference's files (ark paths in the scp files aside), and no temp or lock file."""
    mine = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".done"}
    theirs = {str(p.relative_to(ref)): p.read_bytes() for p in ref.rglob("*") if p.is_file() and p.suffix != ".done"}
    assert mine.keys() == theirs.keys() and not leftovers(out)
    for name, data in theirs.items():
        assert mine[name] == data.replace(str(ref).encode(), str(out).encode()), name


def test_killed_worker_fails_the_job_in_one_line(long_dir, reference, tmp_path):
    out = tmp_path / "feats"
    proc = subprocess.Popen(cli("dump-features", "--data-dir", str(long_dir), "--feature", "fbank", "--feature-conf",
                                "{num_mel_bins: 4}", "--nj", "2", "--out-dir", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = temp_pid(out / "shards", "feats_1_2.ark", proc)
    os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer does
    _, err = proc.communicate(timeout=60)  # before: waited forever
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].endswith(f"dump-features: worker for shard 1/2 (pid {pid}) was killed by "
                                                 "SIGKILL (out of memory?) before finishing; the other workers were "
                                                 "stopped, rerun to resume")
    assert not leftovers(out) and not (out / "feats.scp").exists() and not (out / "shards" / "feats_1_2.done").exists()
    dump_features(str(long_dir), "fbank", str(out), nj=2, **FBANK4)  # the rerun
    assert_same_dump(out, reference)


@pytest.mark.parametrize("sig, via_launch", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_stopping_the_parent_stops_its_workers(long_dir, reference, tmp_path, sig, via_launch):
    out = tmp_path / "feats"
    dump = cli("dump-features", "--data-dir", str(long_dir), "--feature", "fbank", "--feature-conf",
               "{num_mel_bins: 4}", "--out-dir", str(out))
    argv = cli("launch", "--nj", "2", "--", *dump) if via_launch else [*dump, "--nj", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [temp_pid(out / "shards", f"feats_{r}_2.ark", proc) for r in (0, 1)]
    with pytest.raises(OutputBusy, match=rf"{out}: in use by another softtok run \(pid \d+\)"):
        dump_features(str(long_dir), "fbank", str(out), nj=2, **FBANK4)  # a second run into the same folder
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    t0 = time.monotonic()
    while not all(map(gone, workers)) and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    assert all(map(gone, workers))
    time.sleep(0.5)  # before: orphaned workers went on and finished their shards
    assert not list((out / "shards").glob("*.done")) and not leftovers(out)
    if not via_launch:  # the rerun: both shards here, one after the other (the same files as two workers')
        for rank in (0, 1):
            dump_features(str(long_dir), "fbank", str(out), shard=f"{rank}/2", **FBANK4)
        assert_same_dump(out, reference)


@pytest.mark.parametrize("what, error, message", [
    ("kill", JobError, r"^worker for job b \(pid \d+\) was killed by SIGKILL \(out of memory\?\) before finishing"),
    ("raise", ValueError, r"^utterance 'x': bad input$")])
def test_a_failed_worker_stops_its_sleeping_sibling(what, error, message):
    t0 = time.monotonic()
    with pytest.raises(error, match=message):
        run_workers(job, [("job a", ("sleep",)), ("job b", (what,))])
    assert time.monotonic() - t0 < 60  # the sleeper (120 s) was stopped, not waited for


def test_run_workers_returns_results_in_order():
    assert run_workers(job, [("job a", ("ok",)), ("job b", ("ok",))]) == [7, 7]


def test_temp_files_of_dead_runs_are_removed(tmp_path, tone_dir):
    out, shards = tmp_path / "feats", tmp_path / "feats" / "shards"
    shards.mkdir(parents=True)
    live = subprocess.Popen(["sleep", "60"])
    dead = dead_pid()
    try:
        stale = [out / f"feats.scp.tmp.{dead}", shards / f"feats_0_2.ark.tmp.{dead}", out / f"x.tmp.{dead}" / "f"]
        other = shards / f"feats_1_2.ark.tmp.{dead}"  # another shard's: an array task leaves it to that shard
        alive = shards / f"feats_0_2.scp.tmp.{live.pid}"
        for path in [*stale, other, alive]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("half")
        dump_features(str(tone_dir), "mfcc", str(out), shard="0/2")
        assert not stale[1].exists() and other.exists() and alive.exists() and stale[0].exists()
        dump_features(str(tone_dir), "mfcc", str(out), nj=2)
        assert not any(p.exists() for p in [*stale, stale[2].parent, other]) and alive.exists()
    finally:
        live.kill()
        live.wait()
    assert len(load_yaml(out / "feats.yaml")) > 0 and not [p for p in out.rglob("*.lock")]


def test_killed_learn_kmeans_and_copy_leave_nothing_behind(tmp_path, tone_dir):
    feats = dump_features(str(tone_dir), "mfcc", str(tmp_path / "feats"))["output"]
    dead = dead_pid()
    km = tmp_path / "km" / "k4.npy"
    km.parent.mkdir()
    halves = [km.with_name(f"k4.npy.tmp.{dead}"), km.with_name(f"k4.yaml.tmp.{dead}")]
    keep = km.with_name(f"k40.npy.tmp.{dead}")  # another codebook's: not this run's business
    for path in [*halves, keep]:
        path.write_bytes(b"half")
    run_learn_kmeans(feats, 4, "sklearn", str(km), n_init=1)
    assert not any(p.exists() for p in halves) and keep.exists() and km.is_file()
    (tmp_path / f"copy.tmp.{dead}").mkdir()
    copy_data_dir(tone_dir, tmp_path / "copy")
    assert not (tmp_path / f"copy.tmp.{dead}").exists() and (tmp_path / "copy" / "wav.scp").is_file()


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_non_regular_audio_is_refused_unopened(tmp_path, tone_dir, kind):
    special = {"fifo": tmp_path / "f.wav", "device": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(special)
    write_data_dir(tone_dir, {"utt_a": str(tmp_path / "a.wav"), "utt_f": str(special)})
    what = {"fifo": "a FIFO", "device": "a character device", "directory": "a directory"}[kind]
    with deadline(20), pytest.raises(ValueError, match=rf"utterance 'utt_f': {special} is {what}, not a regular file"):
        dump_features(str(tone_dir), "mfcc", str(tmp_path / "feats"))
    assert not (tmp_path / "feats" / "feats.scp").exists() and not leftovers(tmp_path / "feats")


def test_fifo_in_feats_scp_is_refused_unopened(tmp_path, tone_dir):
    feats = Path(dump_features(str(tone_dir), "mfcc", str(tmp_path / "feats"))["output"])
    km = tmp_path / "k4.npy"
    run_learn_kmeans(str(feats), 4, "sklearn", str(km), n_init=1)
    fifo = tmp_path / "fifo.ark"
    os.mkfifo(fifo)
    bad = tmp_path / "bad" / "feats.scp"
    bad.parent.mkdir()
    lines = feats.read_text().splitlines()
    bad.write_text("\n".join(lines[:2] + [f"utt_c {fifo}:6"]) + "\n")
    with deadline(20):
        with pytest.raises(ValueError, match=rf"feats.scp: 'utt_c': {fifo} is a FIFO, not a regular file"):
            run_learn_kmeans(str(bad), 4, "sklearn", str(tmp_path / "k.npy"), n_init=1)
        (bad.parent / "utt2num_frames").unlink(missing_ok=True)
        with pytest.raises(ValueError, match=rf"feats.scp: 'utt_c': {fifo} is a FIFO"):
            run_dump_tokens(str(bad), str(km), "hard", str(tmp_path / "tok"))
        scp_fifo = tmp_path / "fifo.scp"
        os.mkfifo(scp_fifo)
        with pytest.raises(ValueError, match=rf"{scp_fifo} is a FIFO, not a regular file"):
            run_dump_tokens(str(scp_fifo), str(km), "hard", str(tmp_path / "tok2"))


HOLD = """import fcntl, os, sys, time
for path, mode in zip(sys.argv[1::2], sys.argv[2::2]):
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX if mode == "ex" else fcntl.LOCK_SH)
    if mode == "ex":
        os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def held(*locks: Tuple[Path, str]) -> Iterator[int]:
    """Another live process holding ``(lock file, "ex" | "sh")`` locks (as a running softtok would); its pid."""
    for lock, _ in locks:
        lock.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", HOLD, *(str(a) for lock in locks for a in lock)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_output_folder_in_use_is_refused_at_once(tmp_path, tone_dir):
    out = tmp_path / "feats"
    with held((out / ".softtok.lock", "ex")) as pid:
        t0 = time.monotonic()
        with pytest.raises(OutputBusy, match=rf"^{out}: in use by another softtok run \(pid {pid}\); wait for it"):
            dump_features(str(tone_dir), "mfcc", str(out))
        assert time.monotonic() - t0 < 10 and not (out / "shards").exists()
    with held((out / ".softtok.lock", "sh"), (out / "shards" / "feats_0_2.lock", "ex")) as pid:  # task 0/2
        dump_features(str(tone_dir), "mfcc", str(out), shard="1/2")  # other shards go on beside it
        for kwargs in ({"shard": "0/2"}, {"nj": 2}, {"merge": 2}):
            with pytest.raises(OutputBusy, match=rf"\(pid {pid}\)"):
                dump_features(str(tone_dir), "mfcc", str(out), **kwargs)
    (out / ".softtok.lock").write_text(f"{dead_pid()}\n")  # a killed run's lock: taken over
    dump_features(str(tone_dir), "mfcc", str(out), nj=2)
    assert load_yaml(out / "feats.yaml")["num_utts"] == 3 and not leftovers(out)
    km = tmp_path / "k4.npy"
    run_learn_kmeans(str(out / "feats.scp"), 4, "sklearn", str(km), n_init=1)
    with held((tmp_path / "tok" / ".softtok.lock", "ex")) as pid:
        with pytest.raises(OutputBusy, match=rf"tok: in use by another softtok run \(pid {pid}\)"):
            run_dump_tokens(str(out / "feats.scp"), str(km), "hard", str(tmp_path / "tok"))


def test_pid_alive():
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid()) and pid_alive(0)
