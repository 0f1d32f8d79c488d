"""Issue 15, class 2: no NaN or garbage with exit status 0. Values are validated where they enter (τ, top-k, counts,
batch sizes, duplicate keys), the heads stay finite and hard at τ → 0 for every finite input, and non-finite
features or outputs are refused by name before anything is written."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import kaldiio
import numpy as np
import pytest
import torch

from softtok.cli import main
from softtok.common import positive_float, positive_int
from softtok.downstream.training import check_run_config, load_run_config
from softtok.tokenizers.datadir import DataError, load_data_dir
from softtok.tokenizers.dump_features import _batches
from softtok.tokenizers.fileio import ArkScpWriter, load_num_frames, read_scp_entries
from softtok.tokenizers.heads import build_head
from softtok.tokenizers.kmeans import Codebook, learn_kmeans
from softtok.tokenizers.tau import check_tau, tau_of, taus_of

pytestmark = pytest.mark.usefixtures("one_thread")


def codebook(k: int = 8, dim: int = 4, scale: float = 1.0, seed: int = 0) -> Codebook:
    return Codebook((np.random.default_rng(seed).normal(size=(k, dim)) * scale).astype(np.float32))


def frames(n: int = 40, dim: int = 4, scale: float = 1.0, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(seed).normal(size=(n, dim)) * scale).astype(np.float32))


def brute_ids(x: torch.Tensor, cb: Codebook) -> torch.Tensor:
    """Nearest centroids in float64 with the direct difference form (no overflow for these magnitudes)."""
    return ((x.double()[:, None, :] - torch.from_numpy(cb.centroids).double()[None]) ** 2).sum(2).argmin(1)


def write_scp(folder: Path, mats: Dict[str, np.ndarray]) -> Path:
    """A feats.scp written with kaldiio directly (softtok's own writer refuses non-finite matrices)."""
    folder.mkdir(parents=True, exist_ok=True)
    kaldiio.save_ark(str(folder / "feats.ark"), mats, scp=str(folder / "feats.scp"))
    return folder / "feats.scp"


def errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def one_error(caplog, *needles: str) -> str:
    found = errors(caplog)
    assert len(found) == 1 and "\n" not in found[0], found
    assert all(n in found[0] for n in needles), (needles, found[0])
    return found[0]


# ---------------------------------------------------------------- the soft head: finite and hard as τ → 0


@pytest.mark.parametrize("tau", [1e-39, 1e-45, 1e-46, 1e-300, 5e-324])
def test_soft_head_is_the_hard_one_hot_at_every_tiny_tau(tau):
    """Below float32's smallest subnormal (1.4e-45) τ became 0 in float32 and 0/0 gave NaN (old code: all-NaN rows
    at 1e-46, 1e-300, 5e-324); now the division runs in float64 there and the one-hot holds exactly."""
    cb, x = codebook(), frames()
    hard = build_head("hard", cb)(x).ids
    dense = build_head("soft", cb, tau=tau)(x).probs
    assert torch.isfinite(dense).all() and torch.equal(dense.argmax(2), hard)
    assert torch.equal(dense.max(2).values, torch.ones_like(dense.max(2).values))
    top = build_head("soft", cb, tau=tau, top_k=3)(x)
    assert torch.isfinite(top.weights).all() and torch.equal(top.ids[..., 0], hard)
    assert torch.equal(top.weights[..., 0], torch.ones_like(top.weights[..., 0]))


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e37])
def test_huge_centroids_and_features_give_the_true_nearest_and_finite_probabilities(scale):
    """|x|² past float32's range made d² inf − inf = NaN (old code: every hard id 0, all-NaN probabilities); now
    the distances are recomputed in float64 where float32 overflowed."""
    cb, x = codebook(scale=scale), frames(scale=scale)
    truth = brute_ids(x, cb)
    assert torch.equal(build_head("hard", cb)(x).ids[:, 0], truth)
    for tau in (1e-3, 1.0, scale * scale):
        probs = build_head("soft", cb, tau=tau)(x).probs
        assert torch.isfinite(probs).all() and torch.allclose(probs.sum(2), torch.ones(len(x), 1))
        assert torch.equal(probs.argmax(2)[:, 0], truth)
    for use_faiss in (True, False):  # faiss works in float32: its overflow falls back to the exact path
        top = build_head("soft", cb, tau=1.0, top_k=4, use_faiss=use_faiss)(x)
        assert torch.isfinite(top.weights).all() and torch.equal(top.ids[:, 0, 0], truth)
    assert torch.isfinite(build_head("soft", cb, tau=scale * scale)(x).probs).all()


def test_huge_per_channel_codebook_stays_finite():
    """A per-channel (dMel-style) codebook: (x − c)² overflowed float32 per channel the same way."""
    centres = np.linspace(-3e19, 3e19, 5, dtype=np.float32)[:, None].repeat(3, 1)
    cb = Codebook(centres, {"per_channel": True})
    x = torch.tensor([[2.9e19, -2.9e19, 0.1e19]], dtype=torch.float32)
    ids = build_head("hard", cb)(x).ids
    probs = build_head("soft", cb, tau=1.0)(x).probs
    assert ids.tolist() == [[4, 0, 2]] and torch.isfinite(probs).all() and torch.equal(probs.argmax(2), ids)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_frames_in_memory_are_refused_not_token_zero(bad):
    x = frames()
    x[3, 1] = bad
    for name, conf in (("hard", {}), ("soft", {"tau": 1.0}), ("soft", {"tau": 1.0, "top_k": 2})):
        with pytest.raises(ValueError, match="NaN or infinite"):
            build_head(name, codebook(), **conf)(x)


# ---------------------------------------------------------------- archives: refused by utterance, nothing written


@pytest.fixture
def nan_feats(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    mats = {f"utt{i}": rng.normal(size=(30, 4)).astype(np.float32) for i in range(3)}
    mats["utt1"][7, 2] = np.nan
    mats["utt2"][0, 0] = np.inf
    return write_scp(tmp_path / "feats", mats)


def test_nan_frames_from_an_archive_name_the_utterance_at_every_reader(tmp_path, nan_feats, caplog):
    """Old code: dump-tokens exited 0 writing token id 0 (hard) or NaN rows (soft) for utt1."""
    km = tmp_path / "km.npy"
    codebook(k=4).save(km)
    for head in (["--head", "hard"], ["--head", "soft", "--tau", "1"]):
        caplog.clear()
        out = tmp_path / f"tokens_{head[1]}"
        assert main(["dump-tokens", "--feats", str(nan_feats), "--kmeans", str(km), *head, "--out-dir", str(out)]) == 1
        one_error(caplog, "'utt1'", "NaN or infinite", "frame 7")
        assert not list(out.rglob("tokens*")) and not list(out.rglob("*.done")) and not list(out.rglob("*.tmp.*"))
    caplog.clear()
    assert main(["learn-kmeans", "--feats", str(nan_feats), "--n-clusters", "2", "--out", str(tmp_path / "k.npy")]) == 1
    one_error(caplog, "'utt1'", "NaN or infinite")
    assert not (tmp_path / "k.npy").exists()
    from softtok.downstream.data import ScpFeatures

    with pytest.raises(ValueError, match="'utt2' has NaN or infinite values"):
        ScpFeatures(str(nan_feats)).read("utt2")


def test_writers_refuse_non_finite_outputs_and_leave_nothing(tmp_path):
    ark, scp = tmp_path / "o" / "x.ark", tmp_path / "o" / "x.scp"
    with pytest.raises(ValueError, match="'bad': refusing to write NaN"):
        with ArkScpWriter(ark, scp) as writer:
            writer.write("good", np.zeros((2, 3), np.float32))
            writer.write("bad", np.full((2, 3), np.nan, np.float32))
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == []
    bad = codebook()
    bad.centroids[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite centroids"):
        bad.save(tmp_path / "km.npy")
    assert not list(tmp_path.glob("km*"))


# ---------------------------------------------------------------- values where they enter


@pytest.mark.parametrize("tau", [True, False, "1", None, float("nan"), 0.0, -2.0, 1e-400])
def test_tau_must_be_a_positive_finite_number(tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        check_tau(tau)


def test_tau_factor_and_scale_are_numbers_too():
    """``tau_factor: true`` in a config ran as factor 1 (old code: tau_of(True, 2.0) == 2.0)."""
    for factor, scale in ((True, 2.0), (1.0, True), (float("nan"), 2.0), (1.0, 0.0), (-1.0, 2.0)):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            tau_of(factor, scale)
    with pytest.raises(ValueError, match="tau scale"):
        taus_of(1.0, [2.0, True])
    assert tau_of(2, 1.5) == 3.0 and tau_of(np.float32(0.5), np.float64(4.0)) == 2.0


def test_yaml_tau_true_and_top_k_zero_or_bool_are_refused(tmp_path, caplog):
    feats = write_scp(tmp_path / "f", {"a": np.ones((5, 4), np.float32)})
    km = tmp_path / "km.npy"
    codebook(k=4).save(km)
    base = ["dump-tokens", "--feats", str(feats), "--kmeans", str(km), "--head", "soft", "--out-dir", str(tmp_path / "o")]
    for conf, needle in (("{tau: true}", "got True"), ("{tau: 1, top_k: 0}", "top_k=0"),
                         ("{tau: 1, top_k: true}", "top_k=True"), ("{tau: 1, top_k: 2.5}", "top_k=2.5")):
        caplog.clear()
        assert main([*base, "--head-conf", conf]) == 1, conf
        one_error(caplog, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option,argv", [
    ("--top-k", ["dump-tokens", "--feats", "f", "--kmeans", "k", "--head", "soft", "--tau", "1", "--top-k", "0",
                 "--out-dir", "o"]),
    ("--top-k", ["asr", "decode", "--exp-dir", "e", "--feats", "f", "--head", "soft", "--tau", "1", "--top-k", "0",
                 "--out-dir", "o"]),
    ("--top-k", ["transcribe", "bundle", "a.wav", "--top-k", "0"]),
    ("--batch-frames", ["transcribe", "bundle", "a.wav", "--batch-frames", "0"]),
    ("--batch-size", ["dump-features", "--data-dir", "d", "--feature", "mfcc", "--batch-size", "0", "--out-dir", "o"]),
    ("--batch-size", ["dump-features", "--data-dir", "d", "--feature", "mfcc", "--batch-size", "-3", "--out-dir", "o"]),
    ("--n-clusters", ["learn-kmeans", "--feats", "f", "--n-clusters", "0", "--out", "k.npy"]),
    ("--n-bins", ["learn-dmel", "--feats", "f", "--n-bins", "1", "--out", "k.npy"]),
    ("--num-threads", ["asr", "train", "--config", "c", "--train-feats", "f", "--train-text", "t", "--valid-feats",
                       "f", "--valid-text", "t", "--exp-dir", "e", "--num-threads", "-1"]),
])
def test_counts_at_the_command_line_are_refused_at_parsing(option, argv, capsys):
    """``--top-k 0`` and a non-positive batch size are parse errors (exit 2, one line naming the option), not
    ignored (old code: --batch-size -1 wrote an empty shard marked done)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "expected an integer >=" in err and f"argument {option}" in err, err


def test_batch_size_in_the_python_api_is_refused_before_a_shard_is_marked_done():
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="--batch-size must be an integer >= 1"):
            _batches(["a", "b"], bad)
    assert _batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]


@pytest.mark.parametrize("backend,options,needle", [
    ("faiss", {"niter": 0}, "niter"), ("faiss", {"niter": -5}, "niter"), ("torch", {"niter": True}, "niter"),
    ("torch", {"batch": 0}, "batch"), ("sklearn", {"batch_size": 0}, "batch_size"),
    ("sklearn", {"n_init": 0}, "n_init"), ("sklearn", {"max_iter": 2.5}, "max_iter"),
])
def test_kmeans_counts_are_refused_before_learning(backend, options, needle):
    """Old code: niter <= 0 returned the unrefined seeds with exit status 0."""
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=f"k-means option {needle} must be an integer >= 1"):
        learn_kmeans(x, 4, backend=backend, **options)


def test_kmeans_k_and_learner_output_checked():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    for k in (0, -1, True):
        with pytest.raises(ValueError, match="number of clusters K must be an integer >= 1"):
            learn_kmeans(x, k, backend="torch")
    for backend in ("faiss", "torch", "sklearn"):  # old code: faiss aborted the process, torch gave garbage
        with pytest.raises(ValueError, match="squared norm up to .* scale the features down"):
            learn_kmeans(x * np.float32(1e20), 4, backend=backend)
    nan = x.copy()
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="frames with NaN or infinite values"):
        learn_kmeans(nan, 4, backend="torch")


@pytest.mark.parametrize("key,value", [("batch_frames", 0), ("max_epoch", -1), ("keep_nbest", 0),
                                       ("warmup_steps", True), ("lr", float("nan")), ("lr", 0.0),
                                       ("grad_clip", -1.0), ("max_text_chars", 0), ("prefetch_batches", -1),
                                       ("max_utt_frames", 1.5)])
def test_training_config_counts_and_rates(tmp_path, key, value):
    """Old code: warmup_steps: 0 divided by zero, batch_frames: 0 silently made one batch per utterance."""
    config = tmp_path / "train.yaml"
    config.write_text("max_epoch: 2\n")
    with pytest.raises(ValueError, match=rf"train\.yaml: {key} must be"):
        load_run_config(str(config), {"seed": 0}, {key: value})
    check_run_config({"max_utt_frames": 0, "num_threads": 0, "lr": 1e-3, "seed": 0}, "ok")  # 0 = no limit / default


def test_positive_validators():
    assert positive_int(np.int64(3), "n") == 3 and positive_int(0, "n", 0) == 0
    assert positive_float(np.float32(2.5), "x") == 2.5
    for bad in (True, "3", 3.0, None):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            positive_int(bad, "n")


# ---------------------------------------------------------------- duplicate keys


def test_duplicate_keys_in_feats_scp_and_utt2num_frames_name_key_and_line(tmp_path, caplog):
    """Old code: a feats.scp listing an utterance twice passed (its second matrix silently won)."""
    scp = write_scp(tmp_path / "f", {"a": np.ones((3, 4), np.float32), "b": np.zeros((2, 4), np.float32)})
    lines = scp.read_text().splitlines()
    scp.write_text("\n".join([lines[0], lines[1], lines[0]]) + "\n")
    with pytest.raises(ValueError, match=r"feats\.scp:3: duplicate key 'a'"):
        read_scp_entries(scp)
    caplog.clear()
    assert main(["learn-kmeans", "--feats", str(scp), "--n-clusters", "2", "--out", str(tmp_path / "k.npy")]) == 1
    one_error(caplog, "feats.scp:3", "duplicate key 'a'")
    scp.write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "f" / "utt2num_frames").write_text("a 3\nb 2\na 3\n")
    with pytest.raises(ValueError, match=r"utt2num_frames:3: duplicate key 'a'"):
        load_num_frames(scp)


@pytest.mark.parametrize("name", ["wav.scp", "text", "utt2spk"])
def test_duplicate_keys_in_a_data_dir(tone_dir, name):
    lines = (tone_dir / name).read_text().splitlines()
    (tone_dir / name).write_text("\n".join([lines[0], lines[0], *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=rf"{name}:2: duplicate key 'utt_a'"):
        load_data_dir(tone_dir)


def test_tiny_tau_through_dump_tokens_writes_finite_one_hot_rows(tmp_path, caplog):
    """End to end at τ = 1e-300 (old code: exit 0 with all-NaN probability rows)."""
    feats = write_scp(tmp_path / "f", {"a": frames(20).numpy(), "b": frames(15, seed=3).numpy()})
    km = tmp_path / "km.npy"
    codebook().save(km)
    with caplog.at_level(logging.INFO):
        assert main(["dump-tokens", "--feats", str(feats), "--kmeans", str(km), "--head", "soft", "--tau", "1e-300",
                     "--out-dir", str(tmp_path / "o")]) == 0
    for _, probs in kaldiio.load_scp(str(tmp_path / "o" / "tokens.scp")).items():
        assert np.isfinite(probs).all() and np.array_equal(probs.max(1), np.ones(len(probs), np.float32))


def test_decode_counts_are_refused_at_parsing():
    """`asr decode --beam-size 0` / `--batch-frames 0`: argparse's exit 2 naming the option, before any model loads."""
    from softtok.downstream.asr.decode import build_parser

    for option in ("--beam-size", "--batch-frames"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["--exp-dir", "x", "--feats", "y", "--out-dir", "z", option, "0"])
        assert exc.value.code == 2
