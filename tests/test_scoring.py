"""WER/CER scoring, the text normaliser, paired bootstrap and score dirs: hand-computed numbers."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from softtok.downstream.scoring import (gap_share, load_per_utt, main, normalize_text, paired_bootstrap, score,
                                        utterance_errors, write_score_dir)
from softtok.tokenizers.datadir import read_kaldi_map
from softtok.tokenizers.fileio import load_yaml

# u1: 1 sub (CAT->BAT) + 1 ins (DOWN) of 3 words; chars "THE CAT SAT" (11): 1 sub + 5 ins (" DOWN").
# u2: identical after normalisation (2 words, 11 chars). u3: missing hyp -> 3 word / 5 char deletions.
REFS = {"u1": "the cat sat.", "u2": "Hello world", "u3": "a b c"}
HYPS = {"u1": "THE BAT SAT DOWN", "u2": "hello, world!"}


def _table(errors, lengths):
    """A per-utterance WER table from lists of word errors and reference lengths."""
    return {f"u{i:04d}": {"word_errors": int(e), "ref_words": int(n), "sub": int(e), "del": 0, "ins": 0,
                          "char_errors": int(e), "ref_chars": int(n)}
            for i, (e, n) in enumerate(zip(errors, lengths))}


@pytest.mark.parametrize("text, expected", [
    ("Hello, world!", "HELLO WORLD"),
    ("  the   cat\tsat \n", "THE CAT SAT"),
    ("don't stop", "DON'T STOP"),
    ("don\u2019t stop", "DON'T STOP"),                # typographic apostrophe
    ("e-mail: a.b@c", "E MAIL A B C"),                # hyphen and punctuation split words
    ("\uff46\uff55\uff4c\uff4c width", "FULL WIDTH"),  # NFKC folds full-width letters
    ("caf\u00e9 na\u0131ve", "CAF\u00c9 NAIVE"),
    ("room 101", "ROOM 101"),
    ("' quoted ''", "QUOTED"),                        # apostrophe-only tokens dropped
    ("?!...", ""),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_utterance_errors_words_and_chars():
    e = utterance_errors("THE CAT SAT", "THE BAT SAT DOWN")
    assert e == {"word_errors": 2, "ref_words": 3, "sub": 1, "del": 0, "ins": 1,
                 "char_errors": 6, "ref_chars": 11}
    # "THE CAT" (7 chars incl. the space) vs "THE BAT S": C->B, then " S" inserted = 3 char errors.
    e = utterance_errors("the cat", "the bat s")
    assert (e["char_errors"], e["ref_chars"]) == (3, 7)
    assert utterance_errors("A B", "")["del"] == 2


def test_score_hand_computed(caplog):
    with caplog.at_level(logging.WARNING, logger="softtok.downstream.scoring"):
        result = score(REFS, HYPS)
    assert result["wer"] == 62.5  # 5 / 8
    assert result["cer"] == 40.74  # 11 / 27
    assert (result["sub"], result["del"], result["ins"]) == (1, 3, 1)
    assert (result["n_utts"], result["n_words"], result["n_chars"], result["n_missing"]) == (3, 8, 27, 1)
    assert result["per_utt"]["u3"] == {"word_errors": 3, "ref_words": 3, "sub": 0, "del": 3, "ins": 0,
                                       "char_errors": 5, "ref_chars": 5}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 of 3" in warnings[0].getMessage()


def test_single_utterance_wer():
    assert score({"a": "THE CAT SAT"}, {"a": "THE BAT SAT DOWN"})["wer"] == 66.67


def test_extra_hypothesis_is_error():
    with pytest.raises(ValueError, match="'zz'"):
        score({"a": "X"}, {"a": "X", "zz": "Y"})


def test_empty_references_are_error():
    with pytest.raises(ValueError, match="no words"):
        score({"a": "..."}, {"a": "X"})


def test_bootstrap_identical_systems():
    rng = np.random.default_rng(1)
    table = _table(rng.integers(0, 5, 50), rng.integers(5, 20, 50))
    r = paired_bootstrap(table, table, n_resamples=1000, seed=0)
    assert r["delta"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert r["p_better"] == 0.0 and r["n_resamples"] == 1000


def test_bootstrap_strictly_better():
    rng = np.random.default_rng(2)
    errs = rng.integers(1, 6, 40)
    lens = np.full(40, 10)
    r = paired_bootstrap(_table(errs, lens), _table(errs - 1, lens), n_resamples=1000, seed=0)
    assert r["delta"] == pytest.approx(-10.0)  # one fewer error per 10-word utterance
    assert r["ci_high"] < 0 and r["p_better"] == 1.0


def test_bootstrap_two_utterances_exact_interval():
    # resample deltas are 100 (both utt 0, p=1/4), 50 (mixed, p=1/2) or 0 (both utt 1, p=1/4)
    r = paired_bootstrap(_table([0, 0], [2, 2]), _table([2, 0], [2, 2]), n_resamples=4000, seed=3)
    assert r["delta"] == 50.0
    assert (r["ci_low"], r["ci_high"]) == (0.0, 100.0)
    assert r["p_better"] == 0.0


def test_bootstrap_seeded_and_cer_metric():
    rng = np.random.default_rng(4)
    lens = rng.integers(5, 30, 100)
    a, b = _table(rng.integers(0, 5, 100), lens), _table(rng.integers(0, 5, 100), lens)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7)["ci_low"] != paired_bootstrap(a, b, seed=8)["ci_low"]
    assert paired_bootstrap(a, b, metric="cer", seed=7)["ci_low"] == paired_bootstrap(a, b, seed=7)["ci_low"]
    r = paired_bootstrap(a, b)
    assert r["ci_low"] <= r["delta"] <= r["ci_high"]


def test_bootstrap_rejects_mismatched_tables():
    a = _table([1, 2], [5, 5])
    with pytest.raises(ValueError, match="same utterances"):
        paired_bootstrap(a, _table([1], [5]))
    with pytest.raises(ValueError, match="reference lengths"):
        paired_bootstrap(a, _table([1, 2], [5, 6]))
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(a, a, metric="ser")


def test_bootstrap_is_fast():
    rng = np.random.default_rng(5)
    lens = rng.integers(3, 30, 2500)
    a, b = _table(rng.integers(0, 3, 2500), lens), _table(rng.integers(0, 3, 2500), lens)
    start = time.perf_counter()
    paired_bootstrap(a, b, n_resamples=1000)
    assert time.perf_counter() - start < 1.0


def test_gap_share_constant_share_has_a_point_interval():
    """Hard 4, soft 3, continuous 0 errors in every 10-word utterance: soft recovers 1/4 of the gap in any resample."""
    lens = np.full(30, 10)
    r = gap_share(_table(np.full(30, 4), lens), _table(np.full(30, 3), lens), _table(np.zeros(30), lens))
    assert (r["share"], r["ci_low"], r["ci_high"]) == (0.25, 0.25, 0.25)
    assert r["gap"] == 40.0 and r["gap_ci_low"] == r["gap_ci_high"] == 40.0 and r["n_utts"] == 30


def test_gap_share_two_utterances_exact_interval():
    """u0 (hard 4, soft 2, cont 0) and u1 (4, 4, 2): resamples give 1/2 (u0 twice, p = 1/4), 1/3 (mixed) or 0."""
    lens = [10, 10]
    r = gap_share(_table([4, 4], lens), _table([2, 4], lens), _table([0, 2], lens), n_resamples=4000, seed=3)
    assert r["share"] == pytest.approx(1 / 3) and (r["ci_low"], r["ci_high"]) == (0.0, 0.5)
    assert r["gap"] == 30.0 and (r["gap_ci_low"], r["gap_ci_high"]) == (20.0, 40.0)


def test_gap_share_undefined_or_unbounded():
    """No gap (|hard − continuous| < 0.5 points): no share; a gap whose interval crosses 0: a share, no interval."""
    lens = [10, 10]
    none = gap_share(_table([3, 2], lens), _table([2, 2], lens), _table([3, 2], lens))
    assert none["share"] is None and none["ci_low"] is None and none["gap"] == 0.0
    crossing = gap_share(_table([2, 0], lens), _table([1, 0], lens), _table([0, 1], lens), n_resamples=4000)
    assert crossing["gap"] == 5.0 and crossing["gap_ci_low"] < 0 < crossing["gap_ci_high"]
    assert crossing["share"] == 1.0 and crossing["ci_low"] is None and crossing["ci_high"] is None
    with pytest.raises(ValueError, match="same utterances"):
        gap_share(_table([1, 2], lens), _table([1, 2], lens), _table([1], [10]))


def test_write_score_dir_round_trip(tmp_path):
    numbers = write_score_dir(tmp_path / "score", REFS, HYPS)
    d = tmp_path / "score"
    assert numbers["wer"] == 62.5 and "per_utt" not in numbers
    assert read_kaldi_map(d / "ref") == {"u1": "THE CAT SAT", "u2": "HELLO WORLD", "u3": "A B C"}
    assert read_kaldi_map(d / "hyp") == {"u1": "THE BAT SAT DOWN", "u2": "HELLO WORLD", "u3": ""}
    wer_txt = (d / "wer.txt").read_text()
    assert "%WER 62.50 [ 5 / 8, 1 ins, 3 del, 1 sub ]" in wer_txt
    assert "%CER 40.74 [ 11 / 27 ]" in wer_txt
    assert load_yaml(d / "score.yaml") == numbers
    assert load_per_utt(d) == score(REFS, HYPS)["per_utt"]
    assert not list(d.glob("*.tmp.*"))


def test_load_per_utt_rejects_bad_rows(tmp_path):
    (tmp_path / "per_utt.txt").write_text("# header\nu1 1 2 3\n")
    with pytest.raises(ValueError, match="per_utt.txt:2"):
        load_per_utt(tmp_path)


def test_cli_score_and_compare(tmp_path, capsys):
    (tmp_path / "text").write_text("u1 the cat sat\nu2 hello world\nu3 a b c\n")
    (tmp_path / "hyp_a").write_text("u3 a b\nu1 the bat sat\nu2 hello word\n")  # unsorted is fine
    (tmp_path / "hyp_b").write_text("u1 the cat sat\nu2 hello world\nu3 a b c\n")
    for name in ("a", "b"):
        assert main(["--ref", str(tmp_path / "text"), "--hyp", str(tmp_path / f"hyp_{name}"),
                     "--out-dir", str(tmp_path / name)]) == 0
    assert "%WER 37.50 [ 3 / 8, 0 ins, 1 del, 2 sub ]" in capsys.readouterr().out
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--n-resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "-37.50 points" in out and "95% CI" in out


def test_cli_errors(tmp_path, caplog):
    (tmp_path / "text").write_text("u1 a\n")
    (tmp_path / "hyp").write_text("u1 a\nu9 b\n")
    args = ["--ref", str(tmp_path / "text"), "--hyp", str(tmp_path / "hyp"), "--out-dir", str(tmp_path / "o")]
    assert main(args) == 1
    assert "'u9'" in caplog.text
    assert main(["--ref", str(tmp_path / "text")]) == 1
