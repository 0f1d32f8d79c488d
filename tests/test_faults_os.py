"""Issue 15, class 4: OS faults and damaged files are one error line naming the path, and nothing is left
half-written: an output that is a file or a directory, a read-only file system (a real read-only bind mount where
the machine allows one, else a patched os.replace), a full disk (patched writes raising ENOSPC), a codebook and its
yaml written together, a truncated checkpoint, invalid YAML, an absurdly long transcript."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from softtok.cli import main
from softtok.common import error_line
from softtok.downstream.asr.train import build_model, load_trained
from softtok.downstream.training import EpochCheckpoints
from softtok.tokenizers.fileio import atomic_files, load_torch, load_yaml
from softtok.tokenizers.kmeans import Codebook

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def write_scp(folder: Path, n_utts: int = 3, dim: int = 4) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    mats = {f"utt{i}": rng.normal(size=(20 + i, dim)).astype(np.float32) for i in range(n_utts)}
    kaldiio.save_ark(str(folder / "feats.ark"), mats, scp=str(folder / "feats.scp"))
    return folder / "feats.scp"


def one_error(caplog, *needles: str) -> str:
    found = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(found) == 1 and "\n" not in found[0], found
    assert all(n in found[0] for n in needles), (needles, found[0])
    return found[0]


def leftovers(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp." in p.name)


@pytest.fixture
def feats(tmp_path) -> Path:
    return write_scp(tmp_path / "feats")


def learn(feats: Path, out: Path, k: int = 2) -> int:
    return main(["learn-kmeans", "--feats", str(feats), "--n-clusters", str(k), "--backend", "torch",
                 "--kmeans-conf", "{device: cpu}", "--out", str(out)])


# ---------------------------------------------------------------- outputs that are files or folders


def test_outputs_that_are_files_or_folders_are_one_line_naming_them(tmp_path, feats, tone_dir, caplog):
    """Old code: tracebacks (IsADirectoryError on km.npy's rename, NotADirectoryError under a file)."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    km = tmp_path / "km.npy"
    assert learn(feats, km) == 0
    cases = [
        (["learn-kmeans", "--feats", str(feats), "--n-clusters", "2", "--out", str(tmp_path / "feats")],
         [str(tmp_path / "feats"), "is a directory"]),
        (["learn-kmeans", "--feats", str(feats), "--n-clusters", "2", "--out", str(a_file / "km.npy")],
         [str(a_file), "is a file"]),
        (["dump-tokens", "--feats", str(feats), "--kmeans", str(km), "--out-dir", str(a_file)],
         [str(a_file), "is a file; --out-dir takes a directory"]),
        (["dump-features", "--data-dir", str(tone_dir), "--feature", "mfcc", "--out-dir", str(a_file)],
         [str(a_file), "is a file; --out-dir takes a directory"]),
        (["asr", "train", "--config", "c.yaml", "--train-feats", str(feats), "--train-text", "t",
          "--valid-feats", str(feats), "--valid-text", "t", "--exp-dir", str(a_file)], [str(a_file), "is a file"]),
    ]
    for argv, needles in cases:
        caplog.clear()
        assert main(argv) == 1, argv
        one_error(caplog, *needles)
    assert a_file.read_text() == "x" and leftovers(tmp_path) == []


# ---------------------------------------------------------------- read-only file system


def _ro_mount_works(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = f"mount --bind {probe} {probe} && mount -o remount,ro,bind {probe} && ! touch {probe}/x 2>/dev/null"
    return shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True).returncode == 0


def test_read_only_file_system_for_real(tmp_path, feats):
    """A read-only bind mount in a private mount namespace (``unshare -rm``): root ignores permission bits, not
    EROFS. learn-kmeans and dump-tokens stop before any work with one line naming the read-only folder."""
    if not _ro_mount_works(tmp_path):
        pytest.skip("no private read-only bind mount here (unshare/mount not permitted)")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old_tokens").mkdir()
    km = tmp_path / "km.npy"
    assert learn(feats, km) == 0
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    softtok = f"{sys.executable} -m softtok.cli"
    runs = {
        "learn": f"{softtok} learn-kmeans --feats {feats} --n-clusters 2 --out {ro}/km.npy",
        "tokens": f"{softtok} dump-tokens --feats {feats} --kmeans {km} --out-dir {ro}/old_tokens",
    }
    for name, command in runs.items():
        script = f"mount --bind {ro} {ro} && mount -o remount,ro,bind {ro} && {command}"
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env)
        errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
        assert proc.returncode == 1 and len(errors) == 1, (name, proc.stderr[-2000:])
        assert "not writable (read-only file system" in errors[0] and str(ro) in errors[0], errors
    assert sorted(p.name for p in ro.rglob("*")) == ["old_tokens"]


def test_read_only_after_the_check_is_one_line_and_leaves_no_temporaries(tmp_path, feats, monkeypatch, caplog):
    """Simulated (os.replace raising EROFS, as a file system remounted read-only mid-run would): the shard, the
    tokens and their temporaries are all absent afterwards."""
    km = tmp_path / "km.npy"
    assert learn(feats, km) == 0

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    out = tmp_path / "tokens"
    for head in (["--head", "hard"], ["--head", "soft", "--tau", "1"]):
        caplog.clear()
        assert main(["dump-tokens", "--feats", str(feats), "--kmeans", str(km), *head, "--out-dir", str(out)]) == 1
        one_error(caplog, "Read-only file system", str(out / "shards"))
        assert [p for p in out.rglob("*") if p.is_file()] == []
    caplog.clear()
    assert learn(feats, tmp_path / "km2.npy") == 1
    one_error(caplog, "Read-only file system", "km2")
    assert not list(tmp_path.glob("km2*"))


# ---------------------------------------------------------------- a full disk; a codebook and its yaml together


def _full_disk_on(monkeypatch, marker: str) -> None:
    """Path.write_text writes a little of a file whose name holds ``marker``, then fails with ENOSPC."""
    real = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if marker in self.name:
            real(self, data[:8], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_disk_full_while_writing_the_yaml_leaves_the_old_codebook_pair(tmp_path, feats, monkeypatch, caplog):
    """Old code: km.npy was renamed into place before km.yaml was written, so a full disk left the new centroids
    beside no yaml (or beside the old one's yaml, K and all)."""
    km = tmp_path / "km.npy"
    assert learn(feats, km, k=2) == 0
    old = (km.read_bytes(), km.with_suffix(".yaml").read_text())
    _full_disk_on(monkeypatch, ".yaml.tmp.")
    caplog.clear()
    assert learn(feats, km, k=3) == 1
    one_error(caplog, "No space left on device", "km.yaml")
    assert (km.read_bytes(), km.with_suffix(".yaml").read_text()) == old
    assert learn(feats, tmp_path / "new" / "km.npy", k=3) == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "feats" not in str(p)) == ["km.npy", "km.yaml"]


def test_disk_full_during_token_arks_leaves_no_shard(tmp_path, feats, monkeypatch, caplog):
    km = tmp_path / "km.npy"
    assert learn(feats, km) == 0
    real = kaldiio.save_ark
    calls = []

    def save_ark(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "tokens_0_1.ark.tmp")
        return real(*args, **kwargs)

    monkeypatch.setattr(kaldiio, "save_ark", save_ark)
    out = tmp_path / "soft"
    caplog.clear()
    assert main(["dump-tokens", "--feats", str(feats), "--kmeans", str(km), "--head", "soft", "--tau", "1",
                 "--out-dir", str(out)]) == 1
    one_error(caplog, "No space left on device")
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_an_interrupted_pair_write_is_named_by_the_reader(tmp_path, monkeypatch, caplog):
    """A kill between the two renames leaves km.npy without km.yaml (the old yaml is removed first, never kept
    beside new centroids); the reader says so. A yaml without its npy is named too."""
    cb = Codebook(np.eye(3, dtype=np.float32), {"feature_spec": {"feature": "mfcc"}})
    km = tmp_path / "km.npy"
    cb.save(km)
    real, calls = os.replace, []

    def killed_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill would stop it between the renames
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        Codebook(2 * np.eye(3, dtype=np.float32), {}).save(km)
    monkeypatch.setattr(os, "replace", real)
    assert km.is_file() and not km.with_suffix(".yaml").exists() and leftovers(tmp_path) == []
    with caplog.at_level(logging.WARNING):
        loaded = Codebook.load(km)
    assert np.array_equal(loaded.centroids, 2 * np.eye(3)) and "no km.yaml beside it" in caplog.text
    km.unlink()
    km.with_suffix(".yaml").write_text("n_clusters: 3\ndim: 3\n")
    with pytest.raises(FileNotFoundError, match="km.yaml is there without it"):
        Codebook.load(km)


def test_atomic_files_renames_in_order_and_cleans_up_on_failure(tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "a.yaml"
    with atomic_files(a, b) as (ta, tb):
        ta.write_text("1")
        tb.write_text("2")
    assert (a.read_text(), b.read_text()) == ("1", "2")
    with pytest.raises(RuntimeError):
        with atomic_files(a, b) as (ta, tb):
            ta.write_text("3")
            raise RuntimeError("disk")
    assert (a.read_text(), b.read_text()) == ("1", "2") and leftovers(tmp_path) == []


# ---------------------------------------------------------------- damaged checkpoints and YAML


TINY_MODEL = {"embed_dim": 8, "encoder": "conformer",
              "encoder_conf": {"output_size": 8, "attention_heads": 2, "linear_units": 16, "num_blocks": 1,
                               "input_layer": "conv2d", "cnn_module_kernel": 3},
              "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1}}


@pytest.fixture
def truncated_exp(tmp_path, feats) -> Path:
    exp = tmp_path / "exp"
    exp.mkdir()
    config = {"token_list": ["<blank>", "<unk>", "A", "<sos/eos>"], "n_tokens": None, "feat_dim": 4,
              "model": TINY_MODEL, "kmeans": None, "head": "continuous"}
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(build_model(config).state_dict(), exp / "model.pth")
    data = (exp / "model.pth").read_bytes()
    (exp / "model.pth").write_bytes(data[: len(data) // 2])
    return exp


def test_a_truncated_checkpoint_is_one_line_naming_it(truncated_exp, feats, tmp_path, caplog):
    """Old code: torch's multi-line RuntimeError traceback (PytorchStreamReader ... central directory)."""
    with pytest.raises(ValueError, match=r"model\.pth: cannot load this checkpoint \(truncated"):
        load_trained(truncated_exp)
    caplog.clear()
    assert main(["asr", "decode", "--exp-dir", str(truncated_exp), "--feats", str(feats), "--head", "continuous",
                 "--device", "cpu", "--out-dir", str(tmp_path / "dec")]) == 1
    one_error(caplog, str(truncated_exp / "model.pth"), "truncated or not a PyTorch file")
    assert not (tmp_path / "dec").exists()
    (truncated_exp / "junk.pth").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="junk.pth: cannot load"):
        load_torch(truncated_exp / "junk.pth")


def test_a_truncated_epoch_checkpoint_stops_resume_by_name(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch1.pth").write_bytes(b"PK\x03\x04 cut short")
    model = torch.nn.Linear(2, 2)
    ckpt = EpochCheckpoints(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"epoch1\.pth: cannot load this checkpoint"):
        ckpt.resume()


def test_invalid_yaml_names_file_and_line(tmp_path, feats, caplog):
    """Old code: yaml's multi-line ScannerError traceback from every CLI."""
    bad = tmp_path / "train.yaml"
    bad.write_text("seed: 0\nmax_epoch: 2\nmodel: {embed_dim: 8\nlr: 0.1\n")
    with pytest.raises(ValueError, match=r"train\.yaml:\d: invalid YAML"):
        load_yaml(bad)
    caplog.clear()
    assert main(["asr", "train", "--config", str(bad), "--train-feats", str(feats), "--train-text", "t",
                 "--valid-feats", str(feats), "--valid-text", "t", "--head", "continuous",
                 "--exp-dir", str(tmp_path / "exp")]) == 1
    one_error(caplog, f"{bad}:", "invalid YAML")
    km = tmp_path / "km.npy"
    assert learn(feats, km) == 0
    km.with_suffix(".yaml").write_text("n_clusters: 2\ndim: [4\n")
    caplog.clear()
    assert main(["dump-tokens", "--feats", str(feats), "--kmeans", str(km), "--out-dir", str(tmp_path / "t")]) == 1
    one_error(caplog, "km.yaml:", "invalid YAML")
    (tmp_path / "bin.yaml").write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ValueError, match=r"bin\.yaml: invalid UTF-8"):
        load_yaml(tmp_path / "bin.yaml")


def test_a_100k_character_transcript_is_refused_before_training_allocates(tmp_path, feats, caplog):
    """Old code: training tokenised it and the attention decoder asked for ~10 GB."""
    text = tmp_path / "text"
    text.write_text("utt0 A\nutt1 " + "AB " * 33334 + "\nutt2 C\n")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"max_epoch": 1, "model": TINY_MODEL}))
    argv = ["asr", "train", "--config", str(config), "--train-feats", str(feats), "--train-text", str(text),
            "--valid-feats", str(feats), "--valid-text", str(text), "--head", "continuous", "--device", "cpu",
            "--exp-dir", str(tmp_path / "exp")]
    caplog.clear()
    assert main(argv) == 1
    one_error(caplog, str(text), "'utt1'", "100001 characters", "max_text_chars=2000")
    assert not (tmp_path / "exp" / "config.yaml").exists() and not (tmp_path / "exp" / "checkpoints").exists()


def test_error_line_formats():
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/a.tmp.1")
    assert error_line(err) == "/x/a.tmp.1: No space left on device"
    err = OSError(errno.EROFS, os.strerror(errno.EROFS), "/x/a.tmp", None, "/x/a")
    assert error_line(err) == "/x/a.tmp -> /x/a: Read-only file system"
    try:
        yaml.safe_load("a: [1\nb: 2")
    except yaml.YAMLError as exc:
        assert "line 2" in error_line(exc) and "\n" not in error_line(exc)
    assert error_line(ValueError("two\nlines")) == "two lines"
    assert error_line(FileNotFoundError("x.scp: file not found")) == "x.scp: file not found"
