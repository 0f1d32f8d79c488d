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


def sweep_lines(title: str, sweep: Dict[str, Any]) -> List[str]:
    """One τ sweep: dev MCD and log-mel distance per τ and for hard, and the τ* it chose."""
    key = sweep["criterion"]
    lines = [f"### {title}", "", "| τ / median d² | τ | dev MCD dB | dev log-mel dist |", "|---|---|---|---|"]
    lines += [f"| {r['factor']} | {r['tau']:.4g} | {r['mcd_db']:.3f} | {r['mel_dist']:.4f} |" for r in sweep["sweep"]]
    lines += [f"| hard | – | {sweep['hard']['mcd_db']:.3f} | {sweep['hard']['mel_dist']:.4f} |", "",
              f"τ* = {sweep['best']['tau']:.4g} ({sweep['best']['factor']} × median squared distance "
              f"{sweep['median_sqdist']:.4g}): lowest mean {sweep['set']} "
              f"{'MCD' if key == 'mcd_db' else 'log-mel distance'}"
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
