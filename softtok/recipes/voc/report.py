"""RESULTS.md (generated from results.json alone) and what the results stage writes beside it: results.json, the
τ-sweep and spectrogram PNGs, the listening samples.

Per set: a main table (spectral, F0, both judges' WER, DNSMOS OVRL, speaker similarity), a second one (both judges'
CER, DNSMOS SIG/BAK/P.808), the number of utterances of every column over fewer than all, and per vocoder a
soft − hard table (one column per K, one row per metric). A results.json of the older shape renders as before
(:mod:`.legacy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from softtok.recipes.voc.figures import plot_spectrograms, plot_tau_sweeps
from softtok.recipes.voc.legacy import legacy_markdown
from softtok.recipes.voc.markdown import (cell, interval, set_title, spectrogram_line, sweep_lines, table,
                                          training_lines)
from softtok.recipes.voc.results import table_conditions
from softtok.recipes.voc.samples import DEFAULT_N, write_samples
from softtok.reporting import commands_section, encoder_note, generated_by, nan_to_none, write_report
from softtok.tokenizers.datadir import load_data_dir
from softtok.tokenizers.tau import tau_tag

# key -> (short name, column label, format); OOD_LABELS: the conversion sets' labels where they differ
METRICS = {
    "mcd_db": ("MCD", "MCD dB ↓", "{:.2f}"),
    "mel_dist": ("log-mel dist", "log-mel dist ↓", "{:.3f}"),
    "f0_rmse_hz": ("F0 RMSE", "F0 RMSE Hz ↓", "{:.1f}"),
    "f0_corr": ("F0 corr", "F0 corr ↑", "{:.3f}"),
    "vuv_error": ("V/UV err", "V/UV err ↓", "{:.3f}"),
    "wer": ("Whisper WER", "Whisper judge WER % ↓", "{:.2f}"),
    "wer_ps": ("pocketsphinx WER", "pocketsphinx WER % (independent judge) ↓", "{:.2f}"),
    "dnsmos_ovrl": ("DNSMOS OVRL", "DNSMOS OVRL ↑", "{:.2f}"),
    "speaker_sim": ("spk sim", "spk sim ↑", "{:.3f}"),
    "cer": ("Whisper CER", "Whisper judge CER % ↓", "{:.2f}"),
    "cer_ps": ("pocketsphinx CER", "pocketsphinx CER % ↓", "{:.2f}"),
    "dnsmos_sig": ("DNSMOS SIG", "DNSMOS SIG ↑", "{:.2f}"),
    "dnsmos_bak": ("DNSMOS BAK", "DNSMOS BAK ↑", "{:.2f}"),
    "dnsmos_p808": ("DNSMOS P.808", "DNSMOS P.808 MOS ↑", "{:.2f}"),
}
OOD_LABELS = {"f0_corr": "F0 corr with source ↑", "vuv_error": "V/UV err vs source ↓",
              "speaker_sim": "spk sim to target ↑"}
MAIN = {"id": ("mcd_db", "mel_dist", "f0_rmse_hz", "f0_corr", "vuv_error", "wer", "wer_ps", "dnsmos_ovrl",
               "speaker_sim"),
        "ood": ("wer", "wer_ps", "dnsmos_ovrl", "speaker_sim", "f0_corr", "vuv_error")}
SECOND = ("cer", "cer_ps", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")
RATES = ("wer", "cer", "wer_ps", "cer_ps")  # percentages: intervals with two decimals


def _label(key: str, kind: str) -> str:
    return OOD_LABELS.get(key, METRICS[key][1]) if kind == "ood" else METRICS[key][1]


def _cells_table(entry: Dict[str, Any], keys: Sequence[str], kind: str) -> List[str]:
    rows = [[row["title"]] + [cell(row["metrics"].get(k), METRICS[k][2]) for k in keys] for row in entry["rows"]]
    return table(["condition"] + [_label(k, kind) for k in keys], rows) + [""]


def _counts_line(entry: Dict[str, Any]) -> List[str]:
    """Which columns are over fewer than all the set's utterances, and over how many."""
    titles = {row["condition"]: row["title"] for row in entry["rows"]}
    fewest = entry.get("metric_fewest", {})
    fewer = [f"{METRICS[k][0]} {n}" + (f" (fewest finite: {titles[fewest[k]['condition']]}, {fewest[k]['finite']})"
                                       if k in fewest else "")
             for k, n in entry["metric_utts"].items() if n < entry["n_utts"] and k in METRICS]
    if not fewer:
        return [f"Every cell is over all {entry['n_utts']} utterances.", ""]
    return [f"Cells and intervals over fewer than all {entry['n_utts']} utterances (those where every row has a "
            f"finite value): {'; '.join(fewer)}; every other column is over all {entry['n_utts']}.", ""]


def _tau_text(tau: Any) -> str:
    """The column note of soft − hard: its τ*, or that soft fell back to hard."""
    return "(soft is hard)" if tau is None else f"(τ* = {tau_tag(tau)})"


def _diff_tables(entry: Dict[str, Any], kind: str) -> List[str]:
    """Per vocoder: soft − hard, one column per K, one row per metric either K compared."""
    lines: List[str] = []
    for vocoder in dict.fromkeys(d["vocoder"] for d in entry["soft_vs_hard"]):
        diffs = [d for d in entry["soft_vs_hard"] if d["vocoder"] == vocoder]
        keys = [k for k in MAIN[kind] + SECOND if any(k in d["metrics"] for d in diffs)]
        header = ["soft − hard"] + [f"K={d['K']} " + _tau_text(d["tau"]) for d in diffs]
        rows = [[_label(k, kind)] + [interval(d["metrics"].get(k), "{:+.2f}" if k in RATES else "{:+.3f}")
                                     for d in diffs] for k in keys]
        lines += [f"{vocoder}, soft − hard (paired bootstrap over the cells' utterances, 95 % interval; negative: "
                  "soft lower):", ""] + table(header, rows) + [""]
    return lines


def _samples_lines(results: Dict[str, Any]) -> List[str]:
    samples = results.get("samples") or {}
    if not samples:
        return []
    lines = ["## Listening samples", "", f"Opus, 16 kHz: {len(next(iter(samples.values()))['utts'])} evenly spaced "
             "utterances of each set under every condition (natural audio resampled as the metrics read it; "
             "22.05 kHz outputs resampled to 16 kHz).", ""]
    for name, entry in samples.items():
        titles = {row["condition"]: row["title"] for row in results["tables"][name]["rows"]}
        rows = [[titles.get(cond, cond)] + [f"[▶]({files[u]})" for u in entry["utts"]]
                for cond, files in entry["files"].items()]
        lines += [f"### {name}", ""] + table(["condition"] + entry["utts"], rows) + [""]
    return lines


def _header(results: Dict[str, Any], commands: str, generated: str) -> List[str]:
    ks = ", ".join(str(k) for k in results["K"])
    return ["# Results", "", f"{generated or generated_by('softtok voc results')}. K = {ks}. Soft (τ*) uses the τ "
            "chosen on dev for each model (never on a test set); soft − hard is a paired bootstrap over utterances "
            "(negative: soft lower). Every cell and interval of a table is over the same utterances: for each "
            "metric, those where every row that has it has a finite value (F0 needs voiced frames in both signals), "
            "recomputed from the per-utterance scores. Speaker similarity is the Resemblyzer cosine to the target "
            "speaker's mean embedding (training utterances). Two ASR judges: Whisper tiny.en (CTranslate2, beam 5), "
            "which shares the feature encoder when the tokens are made from Whisper tiny.en and may then flatter "
            "what that encoder keeps, and pocketsphinx (its bundled en-US model), independent of the features; "
            "their WER/CER are corpus rates (all errors over all reference words or characters of the set). "
            "DNSMOS (P.835 SIG/BAK/OVRL, P.808 MOS; speechmos, offline) predicts naturalness without a reference. "
            f"↓ lower is better, ↑ higher is better.{encoder_note(commands)}", ""] + commands_section(commands)


def results_markdown(results: Dict[str, Any], commands: str, generated: str = "") -> str:
    """The RESULTS.md text, all from results.json: per set its tables, then the τ sweeps, listening samples and
    training (``generated``: the header's 'Generated by ...' phrase, default this command now)."""
    if results.get("format") is None:
        return legacy_markdown(results, commands, generated)
    lines = _header(results, commands, generated)
    for name, kind in results["sets"].items():
        entry = results["tables"][name]
        lines += ([set_title(name, kind), ""] + _cells_table(entry, MAIN[kind], kind) + _counts_line(entry)
                  + _cells_table(entry, SECOND, kind) + _diff_tables(entry, kind) + spectrogram_line(results, name))
    sweeps = [(f"{v} K={k}", s) for v, p in results["vocoders"].items() for k, s in p.get("tau_sweeps", {}).items()]
    if sweeps:
        lines += ["## τ sweep on dev", ""]
        for title, sweep in sweeps:
            lines += sweep_lines(title, sweep)
        lines += ["![τ sweep](tau_sweep.png)", ""]
    return "\n".join(lines + _samples_lines(results) + training_lines(results)) + "\n"


def write_results(results: Dict[str, Any], exp: str, data: str, vocoders: Sequence[str], out_dir: str,
                  commands: str, n_samples: int = DEFAULT_N) -> None:
    """results.json, RESULTS.md (generated from it), the τ-sweep PNG, per set a spectrogram PNG (its first
    utterance under every condition) and ``n_samples`` listening samples per condition."""
    out = Path(out_dir)
    results["spectrograms"], results["samples"] = {}, {}
    for name, kind in results["sets"].items():
        rows = table_conditions(Path(exp), vocoders, results["K"], name, kind)
        samples = write_samples(rows, data, name, out, n_samples) if n_samples else None
        if samples:
            results["samples"][name] = samples
        file, utt = f"spectrograms_{name}.png", load_data_dir(f"{data}/{name}").utt_ids[0]
        plot_spectrograms(rows, data, name, utt, out / file)
        results["spectrograms"][name] = {"file": file, "utt": utt}
    if any(p.get("tau_sweeps") for p in results["vocoders"].values()):
        plot_tau_sweeps(results, out / "tau_sweep.png")
    write_report(out, nan_to_none(results), results_markdown(results, commands))
