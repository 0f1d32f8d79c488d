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
