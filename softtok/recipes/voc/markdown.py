"""Pieces of the vocoder RESULTS.md shared by both results.json formats: cells, intervals, table lines, the τ sweep
and training sections."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from softtok.tokenizers.tau import sweep_choice

DASH = "–"


def cell(value: Any, fmt: str) -> str:
    """A number formatted, or a dash where it is missing or not finite."""
    return DASH if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)


def interval(ci: Optional[Dict[str, float]], fmt: str = "{:+.3f}") -> str:
    """'delta [low, high]' of a paired bootstrap, or a dash."""
    if not ci:
        return DASH
    return f"{fmt.format(ci['delta'])} [{fmt.format(ci['ci_low'])}, {fmt.format(ci['ci_high'])}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A Markdown table."""
    return (["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows])


# a τ sweep's dev metrics: key -> (column, format, what τ* minimised)
SWEEP_METRICS = {"mcd_db": ("dev MCD dB", "{:.3f}", "MCD"),
                 "mel_dist": ("dev log-mel dist", "{:.4f}", "log-mel distance"),
                 "mel_l1": ("dev model mel L1", "{:.4f}", "model log-mel L1 (nothing synthesised)")}


def sweep_lines(title: str, sweep: Dict[str, Any]) -> List[str]:
    """One τ sweep: its dev metrics (MCD and log-mel distance, or the model's mel L1) per τ and for hard, and τ*."""
    keys = [k for k in SWEEP_METRICS if k in sweep["hard"]]
    rows = [[str(r["factor"]), f"{r['tau']:.4g}"] + [SWEEP_METRICS[k][1].format(r[k]) for k in keys]
            for r in sweep["sweep"]]
    rows.append(["hard", DASH] + [SWEEP_METRICS[k][1].format(sweep["hard"][k]) for k in keys])
    lines = [f"### {title}", ""] + table(["τ / median d²", "τ"] + [SWEEP_METRICS[k][0] for k in keys], rows)
    lines += ["", f"τ* = {sweep['best']['tau']:.4g} ({sweep['best']['factor']} × median squared distance "
              f"{sweep['median_sqdist']:.4g}): lowest mean {sweep['set']} {SWEEP_METRICS[sweep['criterion']][2]}"
              + ("." if sweep_choice(sweep) is not None else
                 f", but not below hard's: **soft (τ*) falls back to hard** (its cells repeat hard's)."), ""]
    return lines


def training_lines(results: Dict[str, Any]) -> List[str]:
    """The training section: epochs, averaged epochs, best valid loss and time per model."""
    lines = ["## Training", "", "| model | epochs | averaged | best valid loss | train time |", "|---|---|---|---|---|"]
    for name, t in results.get("training", {}).items():
        secs = f"{t['train_seconds'] / 60:.1f} min" if "train_seconds" in t else DASH
        lines.append(f"| {name} | {t['epochs']} | {t['averaged_epochs']} | {t['best_valid_loss']} | {secs} |")
    return lines


def set_title(name: str, kind: str) -> str:
    """A set's section title by its kind (ID: resynthesis; OOD: conversion)."""
    title = "Resynthesis (in domain)" if kind == "id" else "Conversion into the target voice (out of domain)"
    return f"## {title}: {name}"


def spectrogram_line(results: Dict[str, Any], name: str) -> List[str]:
    """The link to a set's spectrogram PNG, if one was drawn."""
    png = results.get("spectrograms", {}).get(name)
    return [f"Log-mel spectrograms of {png['utt']}: ![{name}]({png['file']})", ""] if png else []
