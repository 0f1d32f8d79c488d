"""The three CLI commands on real speechocean762 audio, as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import List

import numpy as np
import pytest

from conftest import needs_shared, needs_whisper
from softtok.cli import main
from softtok.tokenizers.fileio import load_scp_dict, load_yaml
from softtok.tokenizers.jobs import dedup, split_topk_matrix


@needs_shared
@needs_whisper
def test_whisper_pipeline_end_to_end(so_data, tmp_path, caplog):
    feats = tmp_path / "feats"
    assert main(["dump-features", "--data-dir", str(so_data), "--feature", "whisper",
                 "--out-dir", str(feats), "--nj", "2"]) == 0
    assert "dump-features done: shards=2" in caplog.text and "utts=12" in caplog.text
    km = tmp_path / "km" / "k32.npy"
    assert main(["learn-kmeans", "--feats", str(feats / "feats.scp"), "--n-clusters", "32",
                 "--backend", "faiss", "--portion", "0.5", "--out", str(km)]) == 0
    meta = load_yaml(km.with_suffix(".yaml"))
    assert meta["n_clusters"] == 32 and meta["dim"] == 384 and meta["feature_spec"]["feature"] == "whisper"

    assert main(["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "hard",
                 "--out-dir", str(tmp_path / "hard")]) == 0
    lines = (tmp_path / "hard" / "tokens.txt").read_text().splitlines()
    feats_by_utt = load_scp_dict(feats / "feats.scp")
    assert len(lines) == 12
    hard = {line.split()[0]: np.array(line.split()[1:], dtype=int) for line in lines}
    assert all(len(hard[u]) == len(f) and hard[u].max() < 32 for u, f in feats_by_utt.items())

    assert main(["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "hard",
                 "--dedup", "--out-dir", str(tmp_path / "dedup")]) == 0
    first = (tmp_path / "dedup" / "tokens.txt").read_text().splitlines()[0].split()
    assert np.array_equal(np.array(first[1:], dtype=int), dedup(hard[first[0]]))

    assert main(["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "soft",
                 "--tau", "1e-9", "--top-k", "8", "--out-dir", str(tmp_path / "soft")]) == 0
    soft = load_scp_dict(tmp_path / "soft" / "tokens.scp")
    for utt, matrix in soft.items():
        ids, weights = split_topk_matrix(matrix)
        assert ids.shape == (len(hard[utt]), 8) and np.allclose(weights.sum(1), 1.0)
        assert np.array_equal(ids[:, 0], hard[utt])  # tiny tau: the top-1 is the hard token
    assert "(T, 2k)" in load_yaml(tmp_path / "soft" / "tokens.yaml")["layout"]

    assert main(["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "soft",
                 "--head-conf", "{tau: 100}", "--out-dir", str(tmp_path / "dense")]) == 0
    assert "(T, K) probabilities" in load_yaml(tmp_path / "dense" / "tokens.yaml")["layout"]
    assert main(["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "soft",
                 "--head-conf", "{tau: 100, top_k: 4}", "--out-dir", str(tmp_path / "conf_topk")]) == 0
    assert "(T, 2k)" in load_yaml(tmp_path / "conf_topk" / "tokens.yaml")["layout"]  # top_k given via head-conf
    assert next(iter(load_scp_dict(tmp_path / "conf_topk" / "tokens.scp").values())).shape[1] == 8
    dense = load_scp_dict(tmp_path / "dense" / "tokens.scp")
    assert all(m.shape == (len(hard[u]), 32) and np.allclose(m.sum(1), 1.0, atol=1e-5) for u, m in dense.items())


@needs_shared
def test_cli_errors_are_one_line(so_data, tmp_path, caplog):
    feats = tmp_path / "feats"
    assert main(["dump-features", "--data-dir", str(so_data), "--feature", "mfcc", "--out-dir", str(feats)]) == 0
    km = tmp_path / "km.npy"
    assert main(["learn-kmeans", "--feats", str(feats / "feats.scp"), "--n-clusters", "8", "--out", str(km)]) == 0
    cases = [
        (["dump-features", "--data-dir", str(tmp_path / "nope"), "--feature", "mfcc", "--out-dir", "x"],
         "data directory not found"),
        (["dump-features", "--data-dir", str(so_data), "--feature", "mfcc", "--out-dir", "x", "--shard", "9/2"],
         "--shard"),
        (["learn-kmeans", "--feats", str(tmp_path / "no.scp"), "--n-clusters", "8", "--out", "y.npy"],
         "no.scp: file not found"),
        (["learn-kmeans", "--feats", str(feats / "feats.scp"), "--n-clusters", "8", "--portion", "0",
          "--out", "y.npy"], "--portion must be in (0, 1]"),
        (["learn-kmeans", "--feats", str(feats / "feats.scp"), "--n-clusters", "8", "--backend", "sklearn",
          "--kmeans-conf", "{gpu: true}", "--out", "y.npy"], "k-means backend 'sklearn' has no option 'gpu'"),
        (["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "soft",
          "--out-dir", "z"], "needs --tau"),
        (["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "soft",
          "--tau", "1", "--top-k", "9", "--out-dir", "z"], "top_k=9 must be in [1, K=8]"),
        (["dump-tokens", "--feats", str(feats / "feats.scp"), "--kmeans", str(km), "--head", "soft",
          "--tau", "1", "--dedup", "--out-dir", "z"], "--dedup applies to hard tokens only"),
    ]
    for argv, message in cases:
        caplog.clear()
        assert main(argv) == 1, argv
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], (argv, errors)


def test_console_script_help():
    exe = shutil.which("softtok") or str(sys.executable).replace("python", "softtok")
    for sub in ("dump-features", "learn-kmeans", "dump-tokens"):
        out = subprocess.run([exe, sub, "--help"], capture_output=True, text=True, check=True).stdout
        assert "--out" in out and f"softtok {sub}" in out


def _help(argv, capsys) -> str:
    """What ``softtok ARGV`` prints (it must exit 0, as --help does)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, (argv, out)
    return out


def _subverbs(help_text: str) -> List[str]:
    """The verbs a help text lists (its first positional argument's {a,b,...} choices), or []."""
    section = help_text.split("positional arguments:\n", 1)
    if len(section) < 2 or not section[1].startswith("  {"):
        return []
    return section[1][3:section[1].index("}")].split(",")


def test_every_verb_and_sub_verb_has_help(capsys):
    """Each verb ``softtok --help`` lists (and each of its sub-verbs, down) answers --help with its real options,
    headed by its own ``softtok ...`` usage; the vocoder verbs for either --vocoder."""
    todo = [[verb] for verb in _subverbs(_help(["--help"], capsys))]
    assert {"prepare", "dump-tokens", "analyze", "asr", "voc", "sets", "voc-data", "score", "launch",
            "recipe"} <= {v[0] for v in todo}
    seen = []
    while todo:
        words = todo.pop(0)
        out = _help([*words, "--help"], capsys)
        assert f"usage: softtok {' '.join(words)} " in out and "-h, --help" in out, out
        todo += [[*words, sub] for sub in _subverbs(out)]
        seen.append(" ".join(words))
    assert {"asr train", "asr sweep-tau", "voc train", "voc synth-eval", "sets add-noise", "voc-data timit",
            "analyze rankme", "recipe codebook"} <= set(seen)
    for verb in ("train", "synthesize"):
        mel, hifigan = (_help(["voc", verb, "--vocoder", v, "--help"], capsys) for v in ("mel", "hifigan"))
        assert f"usage: softtok voc {verb} " in hifigan and "--vocoder hifigan" in hifigan.splitlines()[0]
        assert "--exp-dir" in mel and ("Griffin-Lim" in mel) != ("Griffin-Lim" in hifigan)


def test_table_verbs_run_their_module(tmp_path, capsys):
    """``softtok recipe ...`` and ``softtok score ...`` run the module's main with the user's arguments; a group
    without a verb or with a global option before it is a usage error."""
    assert main(["recipe", "codebook", "--dir", "exp/kmeans", "--feature", "hubert", "--k", "8",
                 "--layers", "9", "21"]) == 0
    assert capsys.readouterr().out == "exp/kmeans/hubert_l9_k8.npy,exp/kmeans/hubert_l21_k8.npy\n"
    (tmp_path / "ref").write_text("u1 A B\n")
    (tmp_path / "hyp").write_text("u1 A C\n")
    assert main(["score", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"),
                 "--out-dir", str(tmp_path / "score")]) == 0
    assert (tmp_path / "score" / "wer.txt").is_file()
    for argv, message in ((["asr"], "required: verb"), (["voc", "bogus"], "invalid choice: 'bogus'"),
                          (["voc", "train", "--vocoder", "x"], "--vocoder: invalid choice: 'x'"),
                          (["--log-level", "DEBUG", "asr", "train"], "put 'asr' first")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, argv


def test_help_imports_no_torch():
    """``softtok --help`` builds its parser without importing torch or any verb's module."""
    code = ("import sys; from softtok.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m in ('torch', 'softtok.recipes.asr', 'softtok.recipes.voc', "
            "'softtok.recipes.sets') or m.startswith('softtok.downstream')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_subset_data_without_n_copies_the_dir(tone_dir, tmp_path, caplog):
    """``subset-data`` without --n copies every file as it is (relative paths, extra files), replacing OUT."""
    (tone_dir / "spk2gender").write_text("utt_a f\n")
    out = tmp_path / "copy"
    out.mkdir()
    (out / "stale").write_text("x")
    assert main(["subset-data", "--src", str(tone_dir), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tone_dir.iterdir())
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in tone_dir.iterdir() if p.is_file())
    assert "subset-data done: utts=3" in caplog.text
    assert main(["subset-data", "--src", str(tone_dir), "--out", str(tmp_path / "two"), "--n", "2"]) == 0
    assert (tmp_path / "two" / "wav.scp").read_text().count("\n") == 2
    assert main(["subset-data", "--src", str(tone_dir), "--out", str(tmp_path / "x"), "--n", "-1"]) == 1
