"""Lazy feature reading: frame counts without the data, lazy = preloaded batches, bounded memory."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from softtok.cli import main
from softtok.downstream.asr.data import TokenASRData
from softtok.tokenizers.dump_features import dump_features
from softtok.tokenizers.fileio import (UTT2NUM_FRAMES, ArkScpWriter, load_num_frames, load_scp_dict,
                                       read_matrix_shapes, write_num_frames)
from softtok.tokenizers.heads import build_head
from softtok.tokenizers.kmeans import Codebook


def write_feats(out: Path, lengths: dict, dim: int, seed: int = 0) -> str:
    """A random float32 feats.scp (one ark) of the given utterance lengths; its path."""
    gen = np.random.default_rng(seed)
    with ArkScpWriter(out / "feats.ark", out / "feats.scp") as w:
        for utt, n in lengths.items():
            w.write(utt, gen.normal(size=(n, dim)).astype(np.float32))
    return str(out / "feats.scp")


def test_header_shapes_of_every_kaldi_matrix_kind(tmp_path):
    gen = np.random.default_rng(0)
    mats = {"f32": gen.normal(size=(7, 3)).astype(np.float32), "f64": gen.normal(size=(4, 5)),
            "one": np.ones((1, 2), np.float32)}
    scp = tmp_path / "a.scp"
    kaldiio.save_ark(str(tmp_path / "a.ark"), mats, scp=str(scp))
    for method in (2, 3, 5):  # Kaldi's kSpeechFeature (CM), kTwoByteAuto (CM2), kOneByteAuto (CM3)
        kaldiio.save_ark(str(tmp_path / f"c{method}.ark"), {f"cm{method}": gen.normal(size=(20, 6)).astype(np.float32)},
                         scp=str(tmp_path / f"c{method}.scp"), compression_method=method)
    lines = "".join((tmp_path / f"c{m}.scp").read_text() for m in (2, 3, 5))
    first_f32 = scp.read_text().splitlines()[0].split()[1]
    scp.write_text(scp.read_text() + lines + f"sliced {first_f32}[2:4]\n")  # a slice is read whole
    expected = {k: tuple(v.shape) for k, v in load_scp_dict(scp).items()}
    assert expected["sliced"] == (3, 3) and expected["cm3"] == (20, 6)
    tokens = [(tmp_path / f"c{m}.ark").read_bytes().split(b" ")[1] for m in (2, 3, 5)]  # after `key `
    assert tokens == [b"\0BCM", b"\0BCM2", b"\0BCM3"]
    assert read_matrix_shapes(scp) == expected


def test_frame_counts_from_utt2num_frames_and_old_dumps(tone_dir, tmp_path, caplog):
    dump_features(str(tone_dir), "mfcc", str(tmp_path / "f"), nj=2)
    scp = tmp_path / "f" / "feats.scp"
    frames = {u: len(m) for u, m in load_scp_dict(scp).items()}
    listed = dict(line.split() for line in (tmp_path / "f" / UTT2NUM_FRAMES).read_text().splitlines())
    assert {u: int(n) for u, n in listed.items()} == frames and list(listed) == list(frames)
    assert load_num_frames(scp) == frames and TokenASRData(str(scp)).num_frames == frames
    (tmp_path / "f" / UTT2NUM_FRAMES).unlink()  # a dump from before utt2num_frames: ark headers
    assert load_num_frames(scp) == frames and TokenASRData(str(scp)).num_frames == frames
    (tmp_path / "f" / UTT2NUM_FRAMES).write_text("utt_a 3\n")  # other keys: a warning, then the headers
    with caplog.at_level(logging.WARNING):
        assert load_num_frames(scp) == frames
    assert "keys differ" in caplog.text
    write_num_frames(scp)
    wrong = {**frames, "utt_a": frames["utt_a"] + 1}  # same keys, stale counts: caught when read
    (tmp_path / "f" / UTT2NUM_FRAMES).write_text("".join(f"{u} {n}\n" for u, n in wrong.items()))
    data = TokenASRData(str(scp))
    with pytest.raises(ValueError, match=r"feats.scp: utterance 'utt_a' has shape .* expected .*stale dump"):
        data.collate(["utt_a"], build_head("continuous"))
    (tmp_path / "f" / UTT2NUM_FRAMES).write_text("utt_a three\n")
    with pytest.raises(ValueError, match=f"{UTT2NUM_FRAMES}:1: expected `utt frames`"):
        load_num_frames(scp)


def test_compressed_dump_halves_the_arks_and_reads_back_as_float32(tone_dir, tmp_path):
    for name, extra in (("plain", []), ("cm2", ["--compress"])):
        assert main(["dump-features", "--data-dir", str(tone_dir), "--feature", "mfcc", "--nj", "2",
                     "--out-dir", str(tmp_path / name)] + extra) == 0
    sizes = {n: sum(p.stat().st_size for p in (tmp_path / n / "shards").glob("*.ark")) for n in ("plain", "cm2")}
    assert 0.45 < sizes["cm2"] / sizes["plain"] < 0.55
    plain = load_scp_dict(tmp_path / "plain" / "feats.scp")
    data = TokenASRData(str(tmp_path / "cm2" / "feats.scp"))
    assert (tmp_path / "cm2" / UTT2NUM_FRAMES).read_text() == (tmp_path / "plain" / UTT2NUM_FRAMES).read_text()
    for utt, ref in plain.items():
        mat = data.feats[utt]
        step = (ref.max() - ref.min()) / 65535  # one 16-bit step of the matrix's range
        assert mat.dtype == np.float32 and mat.shape == ref.shape
        assert 0 < np.abs(mat - ref).max() <= step


def _two_sources(tmp_path: Path, second: dict | None = None) -> str:
    lengths = {f"u{i:02d}": 5 + 7 * (i % 5) for i in range(12)}
    a = write_feats(tmp_path / "a", lengths, 6, seed=1)
    b = write_feats(tmp_path / "b", second or lengths, 4, seed=2)
    return f"{a},{b}"


def test_lazy_and_preloaded_batches_are_identical(tmp_path):
    feats = _two_sources(tmp_path)
    text = {f"u{i:02d}": "AB C" for i in range(12)}
    lazy = TokenASRData(feats, text, max_frames=30)
    held = TokenASRData(feats, text, max_frames=30, preload=True)
    assert lazy.source_dims == held.source_dims == [6, 4] and lazy.utts == held.utts
    assert all(lazy.num_frames[u] <= 30 for u in lazy.utts) and len(lazy.utts) < 12
    eager = [load_scp_dict(p) for p in feats.split(",")]  # what the data held before it was lazy
    for u in lazy.utts:
        assert np.array_equal(lazy.feats[u], np.concatenate([src[u] for src in eager], axis=1))
    groups = lazy.batches(60, shuffle=True, seed=3)
    assert groups == held.batches(60, shuffle=True, seed=3) and len(groups) > 2
    codebook = Codebook(np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32), {})
    for head in (build_head("continuous"), build_head("soft", codebook, tau=0.5)):
        for group in groups:
            a, b = lazy.collate(group, head), held.collate(group, head)
            assert a[0] == b[0] and torch.equal(a[2], b[2])
            ta, tb = (t.feats if t.feats is not None else t.probs for t in (a[1], b[1]))
            assert torch.equal(ta, tb)


def test_multi_source_errors_come_at_construction(tmp_path):
    lengths = {f"u{i:02d}": 5 + 7 * (i % 5) for i in range(12)}
    fewer = {u: n for u, n in lengths.items() if u != "u11"}
    with pytest.raises(ValueError, match=r"b/feats.scp: utterances differ from .*a/feats.scp \(11 vs 12, 'u11'"):
        TokenASRData(_two_sources(tmp_path / "x", fewer))
    with pytest.raises(ValueError, match=r"b/feats.scp: utterance 'u03' has 9 frames but .*a/feats.scp has 26"):
        TokenASRData(_two_sources(tmp_path / "y", {**lengths, "u03": 9}))


def test_lazy_data_holds_index_not_matrices(tmp_path):
    """About 200 MB of features: the lazy set allocates well under 1 % of it; preloaded, all of it."""
    lengths = {f"utt{i:04d}": 500 for i in range(400)}
    scp = write_feats(tmp_path / "big", lengths, 256)
    size = 400 * 500 * 256 * 4
    tracemalloc.start()
    try:
        data = TokenASRData(scp)
        _, lazy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        data.feats.preload(data.utts)
        _, preload_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lazy_peak < 0.01 * size, f"lazy construction peaked at {lazy_peak / 1e6:.1f} MB for {size / 1e6:.0f} MB"
    assert preload_peak > size


def test_kmeans_frames_read_only_the_portion_into_one_array(tmp_path):
    """load_frames reads only the drawn utterances, in scp order, into one array: peak memory is the result."""
    from softtok.tokenizers.jobs import load_frames

    lengths = {f"utt{i:03d}": 50 + i for i in range(200)}
    scp = write_feats(tmp_path / "f", lengths, 128)
    write_num_frames(scp)
    mats = load_scp_dict(scp)
    drawn = set(np.random.default_rng(3).choice(200, 50, replace=False).tolist())  # as load_frames draws them
    keys = [key for i, key in enumerate(lengths) if i in drawn]
    expected = np.concatenate([mats[key] for key in keys])
    size = expected.nbytes
    tracemalloc.start()
    try:
        x = load_frames(scp, portion=0.25, seed=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(x, expected)
    assert peak < 1.3 * size, f"peak {peak / 1e6:.2f} MB for a {size / 1e6:.2f} MB result"


def test_kmeans_frames_name_an_utterance_of_the_wrong_shape(tmp_path):
    from softtok.tokenizers.jobs import load_frames

    scp = write_feats(tmp_path / "f", {"a": 5, "b": 6}, 4)
    Path(scp).with_name(UTT2NUM_FRAMES).write_text("a 5\nb 7\n")
    with pytest.raises(ValueError, match=r"feats.scp: 'b' is 6x4, expected 7 frames of dim 4"):
        load_frames(scp)
