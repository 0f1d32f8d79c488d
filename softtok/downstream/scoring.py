"""WER / CER scoring of ASR hypotheses, paired bootstrap comparison of two systems, and the share of one gap
between two systems that a third recovers.

Every reference and hypothesis goes through the same :func:`normalize_text` before
alignment, so numbers of different systems and sets are comparable. Edits are counted
with ``jiwer``; corpus rates are total errors / total reference length (not a mean of
per-utterance rates). CER follows jiwer's convention: characters of the normalised
string *including* the single spaces between words.

Usage::

    softtok score --ref data/test/text --hyp exp/x/hyp --out-dir exp/x/score
    softtok score --compare exp/a/score exp/b/score
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Optional

import jiwer
import numpy as np

from softtok.downstream.stats import paired_bootstrap_interval
from softtok.tokenizers.datadir import read_kaldi_map, write_kaldi_map
from softtok.tokenizers.fileio import atomic_write_text, save_yaml

logger = logging.getLogger(__name__)

UttTable = Dict[str, Dict[str, int]]
"""Per-utterance counts: utt -> {word_errors, ref_words, sub, del, ins, char_errors, ref_chars}."""
MIN_GAP = 0.5  # WER points: a smaller gap leaves the share of it undefined

PER_UTT_COLUMNS = ("word_errors", "ref_words", "sub", "del", "ins", "char_errors", "ref_chars")
METRIC_COLUMNS = {"wer": ("word_errors", "ref_words"), "cer": ("char_errors", "ref_chars")}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})  # typographic ’ and modifier ʼ
_APOSTROPHE_ONLY = re.compile(r"^'+$")


def _filter_chars(text: str) -> str:
    """Keep letters, their combining marks, decimal digits and ``'``; everything else becomes a space.

    A combining mark is kept only right after a kept letter/digit/mark, so a stray accent is not a word.
    """
    out: List[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        keep = ch == "'" or cat[0] == "L" or cat == "Nd" or (cat[0] == "M" and bool(out) and out[-1] not in " '")
        out.append(ch if keep else " ")
    return "".join(out)


def normalize_text(text: str) -> str:
    """The one normaliser for every set: NFKC, upper-case, keep letters/digits/apostrophes, collapse spaces.

    The typographic apostrophe ’ (and ʼ) becomes ``'``; every other character (punctuation, symbols,
    hyphens, other quotes) becomes a space; tokens made only of apostrophes (stray quotes) are dropped.
    """
    text = _filter_chars(unicodedata.normalize("NFKC", text).upper().translate(_APOSTROPHES))
    return " ".join(tok for tok in text.split() if not _APOSTROPHE_ONLY.match(tok))


def utterance_errors(ref: str, hyp: str) -> Dict[str, int]:
    """Word and character edit counts of one (normalised) hypothesis against its reference.

    ``ref_chars`` counts characters of the normalised reference including inter-word spaces (jiwer's CER).
    """
    ref, hyp = normalize_text(ref), normalize_text(hyp)
    words = jiwer.process_words(ref, hyp)
    chars = jiwer.process_characters(ref, hyp)
    return {
        "word_errors": words.substitutions + words.deletions + words.insertions,
        "ref_words": len(ref.split()),
        "sub": words.substitutions,
        "del": words.deletions,
        "ins": words.insertions,
        "char_errors": chars.substitutions + chars.deletions + chars.insertions,
        "ref_chars": len(ref),
    }


def _check_hyp_keys(refs: Dict[str, str], hyps: Dict[str, str]) -> int:
    """Reject hypotheses of unknown utterances; return (and log) how many references lack one."""
    extra = [utt for utt in hyps if utt not in refs]
    if extra:
        raise ValueError(f"hypothesis for utterance {extra[0]!r} has no reference ({len(extra)} such utterances)")
    n_missing = sum(1 for utt in refs if utt not in hyps)
    if n_missing:
        logger.warning("%d of %d reference utterances have no hypothesis; scored as empty (all deletions)",
                       n_missing, len(refs))
    return n_missing


def summarize(table: UttTable) -> Dict[str, float]:
    """Corpus WER/CER (% of total reference length) and edit totals of a per-utterance table."""
    tot = {col: int(sum(row[col] for row in table.values())) for col in PER_UTT_COLUMNS}
    if tot["ref_words"] == 0:
        raise ValueError("references contain no words after normalisation; WER is undefined")
    return {
        "wer": round(100.0 * tot["word_errors"] / tot["ref_words"], 2),
        "cer": round(100.0 * tot["char_errors"] / tot["ref_chars"], 2),
        "n_utts": len(table),
        "n_words": tot["ref_words"],
        "n_chars": tot["ref_chars"],
        "word_errors": tot["word_errors"],
        "sub": tot["sub"],
        "del": tot["del"],
        "ins": tot["ins"],
        "char_errors": tot["char_errors"],
    }


def score(refs: Dict[str, str], hyps: Dict[str, str]) -> dict:
    """Score hypotheses against references: corpus numbers plus ``per_utt`` table and ``n_missing``.

    A reference without hypothesis counts as an empty hypothesis; a hypothesis without reference is an error.
    """
    if not refs:
        raise ValueError("no reference utterances to score")
    n_missing = _check_hyp_keys(refs, hyps)
    table = {utt: utterance_errors(ref, hyps.get(utt, "")) for utt, ref in refs.items()}
    return {**summarize(table), "n_missing": n_missing, "per_utt": table}


def _paired_arrays(table_a: UttTable, table_b: UttTable, metric: str):
    """Aligned (errors_a, errors_b, lengths) arrays of two tables over the same utterances and references."""
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {sorted(METRIC_COLUMNS)}, got {metric!r}")
    if table_a.keys() != table_b.keys():
        diff = sorted(table_a.keys() ^ table_b.keys())
        raise ValueError(f"systems were not scored on the same utterances, e.g. {diff[0]!r} ({len(diff)} differ)")
    err_col, len_col = METRIC_COLUMNS[metric]
    utts = list(table_a)
    lens = np.array([table_a[u][len_col] for u in utts], dtype=np.int64)
    bad = [u for u, n in zip(utts, lens) if table_b[u][len_col] != n]
    if bad:
        raise ValueError(f"utterance {bad[0]!r} has different reference lengths in the two tables")
    errs_a = np.array([table_a[u][err_col] for u in utts], dtype=np.int64)
    errs_b = np.array([table_b[u][err_col] for u in utts], dtype=np.int64)
    return errs_a, errs_b, lens


def paired_bootstrap(table_a: UttTable, table_b: UttTable, metric: str = "wer", n_resamples: int = 1000,
                     seed: int = 0, confidence: float = 0.95) -> Dict[str, float]:
    """Paired bootstrap over utterances of the rate difference B − A (percentage points).

    Returns the observed ``delta``, a percentile interval ``ci_low``/``ci_high``, and ``p_better``:
    the fraction of resamples in which B has the lower rate (delta < 0).
    """
    errs_a, errs_b, lens = _paired_arrays(table_a, table_b, metric)
    if lens.sum() == 0:
        raise ValueError(f"references have zero total length; {metric.upper()} is undefined")
    diff = errs_b - errs_a

    def rate_difference(idx: np.ndarray) -> np.ndarray:
        return 100.0 * diff[idx].sum(axis=1) / np.maximum(lens[idx].sum(axis=1), 1)  # all-empty resample: delta 0

    ci = paired_bootstrap_interval(len(lens), rate_difference, n_resamples, seed, confidence)
    return {
        "metric": metric,
        "delta": float(100.0 * diff.sum() / lens.sum()),
        "ci_low": ci.low,
        "ci_high": ci.high,
        "p_better": ci.p_below_zero,
        "n_resamples": int(n_resamples),
        "n_utts": int(len(lens)),
        "confidence": float(confidence),
    }


def gap_share(low: UttTable, mid: UttTable, high: UttTable, n_resamples: int = 1000, seed: int = 0,
              confidence: float = 0.95, min_gap: float = MIN_GAP) -> Dict[str, Any]:
    """The share of the WER gap from ``low`` to ``high`` that ``mid`` recovers, (E_low − E_mid) / (E_low − E_high)
    over summed word errors, with a bootstrap interval over utterances (the three resampled together).

    ``share`` is None where the gap is under ``min_gap`` WER points; the interval is None there and where the gap's
    own interval comes within ``min_gap`` of 0 (the ratio's interval is then unbounded). E.g. low = hard tokens,
    mid = soft, high = continuous features: 1 is all of the gap, 0 none, above 1 more.
    """
    errs_low, errs_mid, lens = _paired_arrays(low, mid, "wer")
    _, errs_high, _ = _paired_arrays(low, high, "wer")
    if lens.sum() == 0:
        raise ValueError("references have zero total length; WER is undefined")
    gained, gap = errs_low - errs_mid, errs_low - errs_high

    def gap_points(idx: np.ndarray) -> np.ndarray:
        return 100.0 * gap[idx].sum(axis=1) / np.maximum(lens[idx].sum(axis=1), 1)

    def share_of(idx: np.ndarray) -> np.ndarray:
        den = gap[idx].sum(axis=1).astype(np.float64)
        return np.divide(gained[idx].sum(axis=1), den, out=np.full(len(den), np.inf), where=den != 0)

    gap_wer = float(100.0 * gap.sum() / lens.sum())
    gap_ci = paired_bootstrap_interval(len(lens), gap_points, n_resamples, seed, confidence)
    defined = abs(gap_wer) >= min_gap
    ci = (paired_bootstrap_interval(len(lens), share_of, n_resamples, seed, confidence)
          if defined and (gap_ci.low >= min_gap or gap_ci.high <= -min_gap) else None)
    bounded = ci is not None and bool(np.isfinite([ci.low, ci.high]).all())
    return {"share": float(gained.sum() / gap.sum()) if defined else None,
            "ci_low": ci.low if bounded else None, "ci_high": ci.high if bounded else None,
            "gap": gap_wer, "gap_ci_low": gap_ci.low, "gap_ci_high": gap_ci.high, "min_gap": float(min_gap),
            "n_resamples": int(n_resamples), "n_utts": int(len(lens)), "confidence": float(confidence)}


def format_summary(numbers: dict) -> str:
    """Kaldi-style ``%WER``/``%CER`` lines for wer.txt and the terminal."""
    return (f"%WER {numbers['wer']:.2f} [ {numbers['word_errors']} / {numbers['n_words']}, "
            f"{numbers['ins']} ins, {numbers['del']} del, {numbers['sub']} sub ]\n"
            f"%CER {numbers['cer']:.2f} [ {numbers['char_errors']} / {numbers['n_chars']} ]\n"
            f"Scored {numbers['n_utts']} utterances, {numbers['n_missing']} without hypothesis "
            f"(counted as deletions); text normalised by softtok.downstream.scoring.normalize_text.\n")


def _format_per_utt(table: UttTable) -> str:
    """per_utt.txt body: a ``#`` header line, then one whitespace-separated row per utterance, sorted."""
    lines = ["# utt " + " ".join(PER_UTT_COLUMNS)]
    for utt in sorted(table, key=lambda k: k.encode()):
        lines.append(" ".join([utt] + [str(table[utt][col]) for col in PER_UTT_COLUMNS]))
    return "\n".join(lines) + "\n"


def write_score_dir(out_dir: os.PathLike | str, refs: Dict[str, str], hyps: Dict[str, str]) -> dict:
    """Score and write ref, hyp (normalised Kaldi text), wer.txt, per_utt.txt and score.yaml atomically."""
    out_dir = Path(out_dir)
    result = score(refs, hyps)
    numbers = {k: v for k, v in result.items() if k != "per_utt"}
    write_kaldi_map(out_dir / "ref", {u: normalize_text(t) for u, t in refs.items()})
    write_kaldi_map(out_dir / "hyp", {u: normalize_text(hyps.get(u, "")) for u in refs})
    atomic_write_text(out_dir / "per_utt.txt", _format_per_utt(result["per_utt"]))
    atomic_write_text(out_dir / "wer.txt", format_summary(numbers))
    save_yaml(out_dir / "score.yaml", numbers)
    logger.info("%s: %%WER %.2f %%CER %.2f over %d utterances", out_dir, numbers["wer"], numbers["cer"],
                numbers["n_utts"])
    return numbers


def load_per_utt(out_dir: os.PathLike | str) -> UttTable:
    """Read back ``out_dir/per_utt.txt`` (as written by :func:`write_score_dir`) as a per-utterance table."""
    path = Path(out_dir) / "per_utt.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    table: UttTable = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            parts = line.split()
            if len(parts) != len(PER_UTT_COLUMNS) + 1 or not all(p.isdigit() for p in parts[1:]):
                raise ValueError(f"{path}:{lineno}: expected `utt {' '.join(PER_UTT_COLUMNS)}` (integers)")
            if parts[0] in table:
                raise ValueError(f"{path}:{lineno}: duplicate utterance {parts[0]!r}")
            table[parts[0]] = dict(zip(PER_UTT_COLUMNS, map(int, parts[1:])))
    if not table:
        raise ValueError(f"{path}: no utterances")
    return table


def format_comparison(result: Dict[str, float], name_a: str, name_b: str) -> str:
    """One line: observed B − A difference, its interval and P(B better)."""
    pct = int(round(100 * result["confidence"]))
    return (f"%{result['metric'].upper()} {name_b} - {name_a}: {result['delta']:+.2f} points, "
            f"{pct}% CI [{result['ci_low']:+.2f}, {result['ci_high']:+.2f}], P(B better) = {result['p_better']:.3f} "
            f"({result['n_resamples']} paired bootstrap resamples over {result['n_utts']} utterances)\n")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Arguments of ``softtok score``: score one decode, or compare two score dirs."""
    p = argparse.ArgumentParser(prog=prog, description="Score a Kaldi hyp text against a ref text (WER/CER), "
                                                       "or compare two score dirs with a paired bootstrap.")
    p.add_argument("--ref", help="reference Kaldi text file (utt WORDS...)")
    p.add_argument("--hyp", help="hypothesis Kaldi text file")
    p.add_argument("--out-dir", help="where to write ref, hyp, wer.txt, per_utt.txt, score.yaml")
    p.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"), help="two score dirs (from --out-dir)")
    p.add_argument("--metric", default="wer", choices=sorted(METRIC_COLUMNS))
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    return p


def _run(args: argparse.Namespace) -> str:
    """Do what the arguments ask; return the text to print."""
    if args.compare:
        dir_a, dir_b = args.compare
        result = paired_bootstrap(load_per_utt(dir_a), load_per_utt(dir_b), args.metric, args.n_resamples, args.seed)
        return format_comparison(result, dir_a, dir_b)
    if not (args.ref and args.hyp and args.out_dir):
        raise ValueError("give --ref, --hyp and --out-dir, or --compare DIR_A DIR_B")
    refs = read_kaldi_map(Path(args.ref), require_sorted=False)
    hyps = read_kaldi_map(Path(args.hyp), require_sorted=False)
    numbers = write_score_dir(args.out_dir, refs, hyps)
    return format_summary(numbers)


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO)
    try:
        sys.stdout.write(_run(args))
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        logger.error("scoring: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
