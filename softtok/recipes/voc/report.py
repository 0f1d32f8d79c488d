"""RESULTS.md (generated from results.json), the τ-sweep PNG and one spectrogram PNG per set."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from softtok.recipes.voc.evaluate import ID, NATURAL
from softtok.recipes.voc.results import vocoder_conditions
from softtok.reporting import (commands_section, encoder_note, generated_by, nan_to_none, pyplot, save_figure,
                               write_report)
from softtok.tokenizers.audio import read_audio, read_utterance
from softtok.tokenizers.datadir import load_data_dir, read_kaldi_map
from softtok.tokenizers.tau import sweep_choice

# ---------------------------------------------------------------------------------------------- figures


def plot_tau_sweeps(results: Dict[str, Any], path: Path) -> None:
    """Dev MCD against τ (as multiples of the median squared distance) per vocoder, hard as a dashed line."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for vocoder, per_voc in results["vocoders"].items():
        sweep = per_voc.get("tau_sweep")
        if not sweep:
            continue
        line, = ax.plot([r["factor"] for r in sweep["sweep"]], [r["mcd_db"] for r in sweep["sweep"]], marker="o",
                        label=f"{vocoder}: soft")
        ax.axhline(sweep["hard"]["mcd_db"], color=line.get_color(), linestyle="--", label=f"{vocoder}: hard")
    ax.set_xscale("log")
    ax.set_xlabel("τ / median squared distance to nearest centroid")
    ax.set_ylabel("dev MCD (dB)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _condition_waves(exp: Path, data: str, set_name: str, vocoders: Sequence[str],
                     k: int) -> List[Tuple[str, Callable[[str], torch.Tensor]]]:
    """[(title, utt -> waveform)] of every condition of a set, references first."""
    ref = load_data_dir(f"{data}/{set_name}")
    rows: List[Tuple[str, Callable[[str], torch.Tensor]]] = [("natural", lambda u: read_utterance(ref, u))]

    def reader(scp: Path) -> Callable[[str], torch.Tensor]:
        return lambda u: read_audio(read_kaldi_map(scp)[u], u)

    oracle = exp / "reference" / "gl_oracle" / set_name / "wav.scp"
    if oracle.is_file():
        rows.append(("Griffin-Lim oracle", reader(oracle)))
    for vocoder in vocoders:
        for cond, (folder, tau) in vocoder_conditions(exp, vocoder, k).items():
            scp = folder / set_name / "wav.scp"
            if scp.is_file():
                title = f"{vocoder} {cond}" + (f" (τ = {tau:.3g})" if tau else "")
                rows.append((title, reader(scp)))
    return rows


def plot_spectrograms(exp: Path, data: str, set_name: str, vocoders: Sequence[str], k: int,
                      path: Path) -> str:
    """Log-mel spectrograms of one utterance (the set's first) under every condition, one panel each."""
    from softtok.downstream.vocoder.mel import log_mel

    utt = load_data_dir(f"{data}/{set_name}").utt_ids[0]
    rows = _condition_waves(exp, data, set_name, vocoders, k)
    fig, axes = pyplot().subplots(len(rows), 1, figsize=(8, 1.6 * len(rows)), sharex=True, squeeze=False)
    for ax, (title, read) in zip(axes[:, 0], rows):
        wave = read(utt)
        ax.imshow(log_mel(wave).T.numpy(), origin="lower", aspect="auto", vmin=-11.5, vmax=2.0,
                  extent=(0, len(wave) / 16000, 0, 80))
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel(f"time (s) — {set_name}/{utt}")
    fig.tight_layout()
    save_figure(fig, path)
    return utt


# ---------------------------------------------------------------------------------------------- markdown

ID_COLUMNS = [("mcd_db", "MCD dB ↓", "{:.2f}"), ("mel_dist", "log-mel dist ↓", "{:.3f}"),
              ("f0_rmse_hz", "F0 RMSE Hz ↓", "{:.1f}"), ("f0_corr", "F0 corr ↑", "{:.3f}"),
              ("vuv_error", "V/UV err ↓", "{:.3f}"), ("wer", "judge WER % ↓", "{:.2f}"),
              ("cer", "judge CER % ↓", "{:.2f}"), ("speaker_sim", "spk sim ↑", "{:.3f}")]
OOD_COLUMNS = [("wer", "judge WER % ↓", "{:.2f}"), ("cer", "judge CER % ↓", "{:.2f}"),
               ("speaker_sim", "spk sim to target ↑", "{:.3f}"), ("f0_corr", "F0 corr with source ↑", "{:.3f}"),
               ("vuv_error", "V/UV err vs source ↓", "{:.3f}")]
CONDITION_TITLES = {"hard": "hard", "soft": "soft (τ*)", "continuous": "continuous"}
DIFF_TITLES = {"wer": "WER", "mcd_db": "MCD", "mel_dist": "log-mel dist", "f0_rmse_hz": "F0 RMSE",
               "f0_corr": "F0 corr", "vuv_error": "V/UV err", "speaker_sim": "spk sim"}


def _cell(summary: Dict[str, Any], key: str, fmt: str) -> str:
    value = summary.get(key)
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)


def _ci(ci: Optional[Dict[str, float]], fmt: str = "{:+.3f}") -> str:
    if not ci:
        return "–"
    return f"{fmt.format(ci['delta'])} [{fmt.format(ci['ci_low'])}, {fmt.format(ci['ci_high'])}]"


def _set_table(results: Dict[str, Any], name: str) -> List[str]:
    kind = results["sets"][name]
    columns = ID_COLUMNS if kind == ID else OOD_COLUMNS
    lines = ["| condition | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    ref = results["reference"].get(name, {})
    titles = {NATURAL: "natural (reference)" if kind == ID else "source (natural)", "gl_oracle": "Griffin-Lim oracle"}
    for cond, summary in ref.items():
        lines.append(f"| {titles[cond]} | " + " | ".join(_cell(summary, k, f) for k, _, f in columns) + " |")
    for vocoder, per_voc in results["vocoders"].items():
        for cond, summary in per_voc["sets"].get(name, {}).items():
            if cond in CONDITION_TITLES:
                title = f"{vocoder} {CONDITION_TITLES[cond]}"
                lines.append(f"| {title} | " + " | ".join(_cell(summary, k, f) for k, _, f in columns) + " |")
    lines.append("")
    for vocoder, per_voc in results["vocoders"].items():
        diff = per_voc["sets"].get(name, {}).get("soft_vs_hard")
        if diff:
            shown = [key for key, _, _ in columns if key in diff]
            lines.append(f"{vocoder}, soft − hard (paired bootstrap, 95 % interval): " + "; ".join(
                f"{DIFF_TITLES[k]} {_ci(diff[k], '{:+.2f}' if k == 'wer' else '{:+.3f}')}" for k in shown) + ".")
    return lines + [""]


def _sweep_lines(vocoder: str, sweep: Dict[str, Any]) -> List[str]:
    key = sweep["criterion"]
    lines = [f"### {vocoder}", "", "| τ / median d² | τ | dev MCD dB | dev log-mel dist |", "|---|---|---|---|"]
    lines += [f"| {r['factor']} | {r['tau']:.4g} | {r['mcd_db']:.3f} | {r['mel_dist']:.4f} |" for r in sweep["sweep"]]
    lines += [f"| hard | – | {sweep['hard']['mcd_db']:.3f} | {sweep['hard']['mel_dist']:.4f} |", "",
              f"τ* = {sweep['best']['tau']:.4g} ({sweep['best']['factor']} × median squared distance "
              f"{sweep['median_sqdist']:.4g}): lowest mean {sweep['set']} "
              f"{'MCD' if key == 'mcd_db' else 'log-mel distance'}"
              + ("." if sweep_choice(sweep) is not None else
                 f", but not below hard's: **soft (τ*) falls back to hard** (its cells repeat hard's)."), ""]
    return lines


def results_markdown(results: Dict[str, Any], commands: str, generated: str = "") -> str:
    """The RESULTS.md text, all from results.json: one table per set, the τ sweeps, training, figures
    (``generated``: the header's 'Generated by ...' phrase, default this command now)."""
    lines = ["# Results", "", f"{generated or generated_by('softtok voc results')}. K = {results['K']}. Soft (τ*) "
             "uses the τ chosen on dev (never on a test set); soft − hard is a paired bootstrap over utterances "
             "(negative: soft lower). Speaker similarity is the Resemblyzer cosine to the target speaker's mean "
             "embedding (training utterances); the judge is Whisper tiny.en (CTranslate2, beam 5), and its WER/CER "
             "are corpus rates (all errors over all reference words or characters of the set). ↓ lower is better, "
             f"↑ higher is better.{encoder_note(commands)}", ""] + commands_section(commands)
    for name, kind in results["sets"].items():
        title = "Resynthesis (in domain)" if kind == ID else "Conversion into the target voice (out of domain)"
        lines += [f"## {title}: {name}", ""] + _set_table(results, name)
        png = results.get("spectrograms", {}).get(name)
        if png:
            lines += [f"Log-mel spectrograms of {png['utt']}: ![{name}]({png['file']})", ""]
    sweeps = [(v, p["tau_sweep"]) for v, p in results["vocoders"].items() if p.get("tau_sweep")]
    if sweeps:
        lines += ["## τ sweep on dev", ""]
        for vocoder, sweep in sweeps:
            lines += _sweep_lines(vocoder, sweep)
        lines += ["![τ sweep](tau_sweep.png)", ""]
    lines += ["## Training", "", "| model | epochs | averaged | best valid loss | train time |",
              "|---|---|---|---|---|"]
    for name, t in results.get("training", {}).items():
        secs = f"{t['train_seconds'] / 60:.1f} min" if "train_seconds" in t else "–"
        lines.append(f"| {name} | {t['epochs']} | {t['averaged_epochs']} | {t['best_valid_loss']} | {secs} |")
    return "\n".join(lines) + "\n"


def write_results(results: Dict[str, Any], exp: str, data: str, vocoders: Sequence[str], out_dir: str,
                  commands: str) -> None:
    """results.json, RESULTS.md (generated from it), the τ-sweep PNG and one spectrogram PNG per set."""
    out = Path(out_dir)
    results["spectrograms"] = {}
    for name in results["sets"]:
        file = f"spectrograms_{name}.png"
        utt = plot_spectrograms(Path(exp), data, name, vocoders, results["K"], out / file)
        results["spectrograms"][name] = {"file": file, "utt": utt}
    if any(p.get("tau_sweep") for p in results["vocoders"].values()):
        plot_tau_sweeps(results, out / "tau_sweep.png")
    write_report(out, nan_to_none(results), results_markdown(results, commands))
