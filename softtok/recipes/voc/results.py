"""results.json's numbers: per vocoder, set and condition the summary metrics, the soft − hard paired
bootstrap, the τ sweep and the training summaries."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from softtok.downstream.scoring import load_per_utt, paired_bootstrap
from softtok.downstream.vocoder import metrics as M
from softtok.recipes.voc.evaluate import ID, NATURAL, OOD
from softtok.recipes.voc.synthesis import model_heads, synth_name
from softtok.reporting import load_json, training_summary
from softtok.tokenizers.tau import SWEEP_FILE, load_sweep

COMPARED = ("mcd_db", "mel_dist", "f0_rmse_hz", "f0_corr", "vuv_error", "speaker_sim")  # soft − hard, per utt


def vocoder_conditions(exp: Path, vocoder: str, k: int) -> Dict[str, Tuple[Path, Optional[float]]]:
    """{condition: (synth folder, τ)} of one vocoder: hard, soft(τ*), continuous (those that exist)."""
    hard_exp, cont_exp = exp / f"voc_{vocoder}_hard_k{k}", exp / f"voc_{vocoder}_continuous"
    conditions: Dict[str, Tuple[Path, Optional[float]]] = {}
    if (hard_exp / "config.yaml").is_file():
        for head, tau in model_heads(hard_exp):
            conditions[head] = (hard_exp / synth_name(head, tau), tau)
        conditions.setdefault("soft", conditions["hard"])  # no τ beat hard on dev: soft(τ*) is hard
    if (cont_exp / "config.yaml").is_file():
        conditions["continuous"] = (cont_exp / synth_name("continuous"), None)
    if not conditions:
        raise FileNotFoundError(f"{hard_exp}: no trained {vocoder} vocoder (config.yaml) under {exp}")
    return conditions


def _paired(a: Dict[str, Any], b: Dict[str, Any], a_dir: Path, b_dir: Path) -> Dict[str, Any]:
    """Paired bootstrap b − a: judge WER (error counts) and the mean of every per-utterance metric."""
    out: Dict[str, Any] = {}
    if (a_dir / "judge" / "per_utt.txt").is_file() and (b_dir / "judge" / "per_utt.txt").is_file():
        out["wer"] = paired_bootstrap(load_per_utt(a_dir / "judge"), load_per_utt(b_dir / "judge"),
                                      n_resamples=1000, seed=0)
    utts = sorted(set(a["per_utt"]) & set(b["per_utt"]))
    for key in COMPARED:
        if utts and key in a["per_utt"][utts[0]] and key in b["per_utt"][utts[0]]:
            xs = [_nan(a["per_utt"][u][key]) for u in utts]
            ys = [_nan(b["per_utt"][u][key]) for u in utts]
            if any(math.isfinite(x) and math.isfinite(y) for x, y in zip(xs, ys)):
                out[key] = M.paired_mean_difference(xs, ys, n_resamples=1000, seed=0)
    return out


def _nan(value: Optional[float]) -> float:
    return math.nan if value is None else float(value)


def collect_results(exp: str, vocoders: Sequence[str], k: int, id_sets: Sequence[str],
                    ood_sets: Sequence[str]) -> Dict[str, Any]:
    """results.json: per vocoder, set and condition the summary metrics, soft − hard paired bootstrap, τ sweep."""
    exp_path = Path(exp)
    kinds = {**{s: ID for s in id_sets}, **{s: OOD for s in ood_sets}}
    results: Dict[str, Any] = {"K": k, "sets": kinds, "reference": {}, "vocoders": {}}
    for name in kinds:
        ref = {c: exp_path / "reference" / c / name for c in (NATURAL, "gl_oracle")}
        results["reference"][name] = {c: load_json(d / "metrics.json")["summary"] for c, d in ref.items()
                                      if (d / "metrics.json").is_file()}
    for vocoder in vocoders:
        conditions = vocoder_conditions(exp_path, vocoder, k)
        per_voc: Dict[str, Any] = {"sets": {}}
        for name in kinds:
            metrics = {c: load_json(d / name / "metrics.json") for c, (d, _) in conditions.items()
                       if (d / name / "metrics.json").is_file()}
            entry: Dict[str, Any] = {c: {**m["summary"], **({"tau": conditions[c][1]} if c == "soft" else {})}
                                     for c, m in metrics.items()}  # soft's τ None: no τ beat hard, soft is hard
            if "soft" in metrics and "hard" in metrics:
                entry["soft_vs_hard"] = _paired(metrics["hard"], metrics["soft"], conditions["hard"][0] / name,
                                                conditions["soft"][0] / name)
            per_voc["sets"][name] = entry
        hard_exp = exp_path / f"voc_{vocoder}_hard_k{k}"
        if (hard_exp / SWEEP_FILE).is_file():
            per_voc["tau_sweep"] = load_sweep(hard_exp)
        results["vocoders"][vocoder] = per_voc
    results["training"] = {m.name: training_summary(m) for m in sorted(exp_path.glob("voc_*"))
                           if (m / "history.yaml").is_file()}
    return results

