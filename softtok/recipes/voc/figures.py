"""The vocoder recipe's PNGs: dev MCD over the τ grid per vocoder and K, and one spectrogram panel per condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from softtok.recipes.voc.markdown import SWEEP_METRICS
from softtok.recipes.voc.results import Condition, condition_audio
from softtok.reporting import pyplot, save_figure
from softtok.tokenizers.audio import TARGET_SAMPLE_RATE
from softtok.tokenizers.tau import tau_tag


def plot_tau_sweeps(results: Dict[str, Any], path: Path) -> None:
    """Each sweep's dev criterion (MCD, log-mel distance or model mel L1) against τ (as multiples of the median
    squared distance) per vocoder and K, hard as a dashed line; one panel per criterion."""
    sweeps = [(f"{v} K={k}", s) for v, p in results["vocoders"].items() for k, s in p.get("tau_sweeps", {}).items()]
    criteria = list(dict.fromkeys(s["criterion"] for _, s in sweeps))
    fig, axes = pyplot().subplots(1, len(criteria), figsize=(6 * len(criteria), 4), squeeze=False)
    for ax, key in zip(axes[0], criteria):
        for title, sweep in (t for t in sweeps if t[1]["criterion"] == key):
            line, = ax.plot([r["factor"] for r in sweep["sweep"]], [r[key] for r in sweep["sweep"]], marker="o",
                            label=f"{title}: soft")
            ax.axhline(sweep["hard"][key], color=line.get_color(), linestyle="--", label=f"{title}: hard")
        ax.set_xscale("log")
        ax.set_xlabel("τ / median squared distance to nearest centroid")
        ax.set_ylabel(SWEEP_METRICS[key][0])
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _tau_note(cond: Condition) -> str:
    """' (τ = 2.5)' for soft, ' (= hard: no τ beat hard on dev)' where soft fell back to hard."""
    if cond.head != "soft":
        return ""
    return " (= hard: no τ beat hard on dev)" if cond.tau is None else f" (τ = {tau_tag(cond.tau)})"


def plot_spectrograms(rows: Sequence[Condition], data: str, set_name: str, utt: str, path: Path) -> None:
    """Log-mel spectrograms (16 kHz analysis; 22.05 kHz outputs are resampled on reading) of one utterance under
    every condition of a set's table, one panel each."""
    from softtok.downstream.vocoder.mel import log_mel

    fig, axes = pyplot().subplots(len(rows), 1, figsize=(8, 1.6 * len(rows)), sharex=True, squeeze=False)
    for ax, cond in zip(axes[:, 0], rows):
        wave = condition_audio(cond, data, set_name)(utt)
        ax.imshow(log_mel(wave).T.numpy(), origin="lower", aspect="auto", vmin=-11.5, vmax=2.0,
                  extent=(0, len(wave) / TARGET_SAMPLE_RATE, 0, 80))
        ax.set_title(cond.title + _tau_note(cond), fontsize=9, loc="left")
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel(f"time (s) — {set_name}/{utt}")
    fig.tight_layout()
    save_figure(fig, path)
