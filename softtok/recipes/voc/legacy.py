"""RESULTS.md of a results.json without ``format`` (written before format 2): one K, one Whisper judge, each cell
its condition's own summary (for F0, over that condition's voiced utterances: not paired with the interval).
Kept so that committed reports of that shape still render as they were committed; new runs write format 2."""

from __future__ import annotations

from typing import Any, Dict, List

from softtok.recipes.voc.markdown import (cell, interval, set_title, spectrogram_line, sweep_lines, table,
                                          training_lines)
from softtok.reporting import commands_section, encoder_note, generated_by

ID_COLUMNS = [("mcd_db", "MCD dB ↓", "{:.2f}"), ("mel_dist", "log-mel dist ↓", "{:.3f}"),
              ("f0_rmse_hz", "F0 RMSE Hz ↓", "{:.1f}"), ("f0_corr", "F0 corr ↑", "{:.3f}"),
              ("vuv_error", "V/UV err ↓", "{:.3f}"), ("wer", "judge WER % ↓", "{:.2f}"),
              ("cer", "judge CER % ↓", "{:.2f}"), ("speaker_sim", "spk sim ↑", "{:.3f}")]
OOD_COLUMNS = [("wer", "judge WER % ↓", "{:.2f}"), ("cer", "judge CER % ↓", "{:.2f}"),
               ("speaker_sim", "spk sim to target ↑", "{:.3f}"), ("f0_corr", "F0 corr with source ↑", "{:.3f}"),
               ("vuv_error", "V/UV err vs source ↓", "{:.3f}")]
CONDITION_TITLES = {"hard": "hard", "soft": "soft (τ*)", "continuous": "continuous"}
REFERENCE_TITLES = {"natural": ("natural (reference)", "source (natural)"), "gl_oracle": ("Griffin-Lim oracle",) * 2}
DIFF_TITLES = {"wer": "WER", "mcd_db": "MCD", "mel_dist": "log-mel dist", "f0_rmse_hz": "F0 RMSE",
               "f0_corr": "F0 corr", "vuv_error": "V/UV err", "speaker_sim": "spk sim"}


def _set_table(results: Dict[str, Any], name: str) -> List[str]:
    kind = results["sets"][name]
    columns = ID_COLUMNS if kind == "id" else OOD_COLUMNS
    rows = [[REFERENCE_TITLES[cond][kind != "id"]] + [cell(summary.get(k), f) for k, _, f in columns]
            for cond, summary in results["reference"].get(name, {}).items()]
    for vocoder, per_voc in results["vocoders"].items():
        rows += [[f"{vocoder} {CONDITION_TITLES[cond]}"] + [cell(summary.get(k), f) for k, _, f in columns]
                 for cond, summary in per_voc["sets"].get(name, {}).items() if cond in CONDITION_TITLES]
    lines = table(["condition"] + [c[1] for c in columns], rows) + [""]
    for vocoder, per_voc in results["vocoders"].items():
        diff = per_voc["sets"].get(name, {}).get("soft_vs_hard")
        if diff:
            shown = [key for key, _, _ in columns if key in diff]
            lines.append(f"{vocoder}, soft − hard (paired bootstrap, 95 % interval): " + "; ".join(
                f"{DIFF_TITLES[k]} {interval(diff[k], '{:+.2f}' if k == 'wer' else '{:+.3f}')}" for k in shown) + ".")
    return lines + [""]


def legacy_markdown(results: Dict[str, Any], commands: str, generated: str = "") -> str:
    """The RESULTS.md text of a format-1 results.json, as it was rendered when written."""
    lines = ["# Results", "", f"{generated or generated_by('softtok voc results')}. K = {results['K']}. Soft (τ*) "
             "uses the τ chosen on dev (never on a test set); soft − hard is a paired bootstrap over utterances "
             "(negative: soft lower). Speaker similarity is the Resemblyzer cosine to the target speaker's mean "
             "embedding (training utterances); the judge is Whisper tiny.en (CTranslate2, beam 5), and its WER/CER "
             "are corpus rates (all errors over all reference words or characters of the set). ↓ lower is better, "
             f"↑ higher is better.{encoder_note(commands)}", ""] + commands_section(commands)
    for name, kind in results["sets"].items():
        lines += [set_title(name, kind), ""] + _set_table(results, name) + spectrogram_line(results, name)
    sweeps = [(v, p["tau_sweep"]) for v, p in results["vocoders"].items() if p.get("tau_sweep")]
    if sweeps:
        lines += ["## τ sweep on dev", ""]
        for vocoder, sweep in sweeps:
            lines += sweep_lines(vocoder, sweep)
        lines += ["![τ sweep](tau_sweep.png)", ""]
    return "\n".join(lines + training_lines(results)) + "\n"
