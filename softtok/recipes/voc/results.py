"""results.json: per set one table — its rows (natural audio, oracles, every vocoder's hard and soft(τ*) per K, then
continuous) and the soft − hard paired bootstraps per vocoder and K — then the τ sweeps and training summaries.

Every cell of a per-utterance metric and every interval on it are over the same utterances: those of the set where
each row that has the metric has a finite value (F0 needs voiced frames in both signals), so a cell difference is
the interval's point estimate. The cells are recomputed from ``per_utt``, never taken from a ``summary``. The judges'
WER/CER are corpus rates over all the set's utterances, which every row must have scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from softtok.downstream.scoring import UttTable, load_per_utt, paired_bootstrap, summarize
from softtok.downstream.vocoder import metrics as M
from softtok.recipes.voc.evaluate import ID, NATURAL, OOD
from softtok.recipes.voc.oracles import ORACLES
from softtok.recipes.voc.synthesis import model_heads, synth_name
from softtok.reporting import load_json, training_summary
from softtok.tokenizers.audio import read_audio, read_utterance
from softtok.tokenizers.datadir import load_data_dir, read_kaldi_map
from softtok.tokenizers.tau import SWEEP_FILE, Tau, load_sweep

FORMAT = 2  # results.json without "format": one K, cells from each condition's own summary (see .legacy)
PER_UTT_METRICS = ("mcd_db", "mel_dist", "f0_rmse_hz", "f0_corr", "vuv_error", "speaker_sim",
                   "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
JUDGES = {"judge": ("wer", "cer"), "judge_pocketsphinx": ("wer_ps", "cer_ps")}  # score folder -> its corpus rates
HEAD_TITLES = {"hard": "hard", "soft": "soft (τ*)", "continuous": "continuous"}
N_RESAMPLES = 1000


@dataclass(frozen=True)
class Condition:
    """A row of a set's table: its id (results.json, sample file names), title, and the folder holding
    ``<set>/metrics.json`` (and ``<set>/wav.scp`` unless it is the natural audio)."""

    name: str
    title: str
    folder: Path
    vocoder: Optional[str] = None
    k: Optional[int] = None
    head: Optional[str] = None
    tau: Optional[Tau] = None  # soft's τ*; None for soft where no τ beat hard on dev (soft is then hard)

    def record(self) -> Dict[str, Any]:
        return {"condition": self.name, "title": self.title, "vocoder": self.vocoder, "K": self.k,
                "head": self.head, "tau": self.tau}


def vocoder_conditions(exp: Path, vocoder: str, ks: Sequence[int]) -> List[Condition]:
    """Hard and soft(τ* of its own dev sweep) for each K, then continuous (where trained), of one vocoder."""
    rows = []
    for k in ks:
        hard_exp = exp / f"voc_{vocoder}_hard_k{k}"
        if not (hard_exp / "config.yaml").is_file():
            raise FileNotFoundError(f"{hard_exp}: no trained {vocoder} vocoder (config.yaml) for K = {k}")
        tau = dict(model_heads(hard_exp)).get("soft")
        soft_dir = synth_name("soft", tau) if tau is not None else synth_name("hard")  # no τ beat hard: soft is hard
        rows += [Condition(f"{vocoder}_{head}_k{k}", f"{vocoder} {HEAD_TITLES[head]} K={k}", hard_exp / folder,
                           vocoder, k, head, t)
                 for head, folder, t in (("hard", synth_name("hard"), None), ("soft", soft_dir, tau))]
    cont_exp = exp / f"voc_{vocoder}_continuous"
    if (cont_exp / "config.yaml").is_file():
        rows.append(Condition(f"{vocoder}_continuous", f"{vocoder} continuous", cont_exp / synth_name("continuous"),
                              vocoder, head="continuous"))
    return rows


def table_conditions(exp: Path, vocoders: Sequence[str], ks: Sequence[int], set_name: str,
                     kind: str) -> List[Condition]:
    """The rows of a set's table that were scored: natural audio, the oracles, then each vocoder's conditions."""
    ref = exp / "reference"
    rows = [Condition(NATURAL, "natural (reference)" if kind == ID else "source (natural)", ref / NATURAL)]
    rows += [Condition(o.folder, o.title, ref / o.folder) for o in ORACLES.values()]
    rows += [c for vocoder in vocoders for c in vocoder_conditions(exp, vocoder, ks)]
    return [c for c in rows if (c.folder / set_name / "metrics.json").is_file()]


def condition_audio(cond: Condition, data: str, set_name: str) -> Callable[[str], torch.Tensor]:
    """utt -> a row's 16 kHz waveform: the data dir's audio for the natural row, its wav.scp's otherwise."""
    if cond.name == NATURAL:
        ref = load_data_dir(f"{data}/{set_name}")
        return lambda utt: read_utterance(ref, utt)
    scp = read_kaldi_map(cond.folder / set_name / "wav.scp")
    return lambda utt: read_audio(scp[utt], utt)


def _nan(value: Optional[float]) -> float:
    return np.nan if value is None else float(value)


def _check_utterances(path: Path, found: Sequence[str], utts: Sequence[str], first: Path) -> None:
    """One-line refusal of a row that scored other utterances than the table's first row."""
    extra = sorted(set(found) ^ set(utts))
    if extra:
        raise ValueError(f"{path}: {len(found)} utterances, {first} {len(utts)} (e.g. {extra[0]!r} is in one only); "
                         "every row of a table must score the same utterances")


class _Table:
    """One set's rows read back: per-utterance values over the set's utterances and the judges' tables."""

    def __init__(self, rows: List[Condition], set_name: str):
        self.rows = rows
        paths = {c.name: c.folder / set_name / "metrics.json" for c in rows}
        per_utt = {c.name: load_json(paths[c.name])["per_utt"] for c in rows}
        first = paths[rows[0].name]
        self.utts = list(per_utt[rows[0].name])
        for c in rows[1:]:
            _check_utterances(paths[c.name], list(per_utt[c.name]), self.utts, first)
        self.values: Dict[str, Dict[str, np.ndarray]] = {}  # metric -> {row: values over self.utts}
        for key in PER_UTT_METRICS:
            having = [c.name for c in rows if any(key in r for r in per_utt[c.name].values())]
            if having:
                self.values[key] = {n: np.array([_nan(per_utt[n][u].get(key)) for u in self.utts]) for n in having}
        self.common = {key: np.logical_and.reduce([np.isfinite(v) for v in vs.values()])
                       for key, vs in self.values.items()}  # metric -> utterances every row has a finite value on
        self.judged: Dict[str, Dict[str, UttTable]] = {folder: {} for folder in JUDGES}  # folder -> {row: table}
        for c in rows:
            for folder in JUDGES:
                path = c.folder / set_name / folder
                if (path / "per_utt.txt").is_file():
                    table = load_per_utt(path)
                    _check_utterances(path / "per_utt.txt", list(table), self.utts, first)
                    self.judged[folder][c.name] = table

    def cells(self, name: str) -> Dict[str, Optional[float]]:
        """A row's cells: means over each metric's common utterances, the judges' corpus rates."""
        out: Dict[str, Optional[float]] = {}
        for key, vs in self.values.items():
            if name in vs:
                mask = self.common[key]
                out[key] = round(float(vs[name][mask].mean()), 4) if mask.any() else None
        for folder, (wer, cer) in JUDGES.items():
            if name in self.judged[folder]:
                rates = summarize(self.judged[folder][name])
                out.update({wer: rates["wer"], cer: rates["cer"]})
        return out

    def soft_vs_hard(self, hard: str, soft: str) -> Dict[str, Dict[str, float]]:
        """Paired bootstrap soft − hard of every metric both rows have, over the cells' utterances."""
        out = {}
        for key, vs in self.values.items():
            mask = self.common[key]
            if hard in vs and soft in vs and mask.any():
                out[key] = M.paired_mean_difference(vs[hard][mask], vs[soft][mask], n_resamples=N_RESAMPLES, seed=0)
        for folder, rates in JUDGES.items():
            tables = self.judged[folder]
            if hard in tables and soft in tables:
                for key, metric in zip(rates, ("wer", "cer")):
                    out[key] = paired_bootstrap(tables[hard], tables[soft], metric, n_resamples=N_RESAMPLES, seed=0)
        return out

    def fewest(self) -> Dict[str, Dict[str, Any]]:
        """Per metric over fewer than all utterances: the row with the fewest finite values (what limits it)."""
        out = {}
        for key, vs in self.values.items():
            if not self.common[key].all():
                name, finite = min(((n, int(np.isfinite(v).sum())) for n, v in vs.items()), key=lambda nv: nv[1])
                out[key] = {"condition": name, "finite": finite}
        return out

    def record(self) -> Dict[str, Any]:
        pairs = [(c, s) for c in self.rows for s in self.rows
                 if c.head == "hard" and s.head == "soft" and (c.vocoder, c.k) == (s.vocoder, s.k)]
        return {"n_utts": len(self.utts),
                "metric_utts": {key: int(mask.sum()) for key, mask in self.common.items()},
                "metric_fewest": self.fewest(),
                "rows": [{**c.record(), "metrics": self.cells(c.name)} for c in self.rows],
                "soft_vs_hard": [{"vocoder": h.vocoder, "K": h.k, "tau": s.tau,
                                  "metrics": self.soft_vs_hard(h.name, s.name)} for h, s in pairs]}


def collect_results(exp: str, vocoders: Sequence[str], ks: Sequence[int], id_sets: Sequence[str],
                    ood_sets: Sequence[str]) -> Dict[str, Any]:
    """results.json: per set its table (rows, soft − hard per vocoder and K), per vocoder and K its τ sweep,
    the training summaries."""
    exp_path = Path(exp)
    kinds = {**{s: ID for s in id_sets}, **{s: OOD for s in ood_sets}}
    results: Dict[str, Any] = {"format": FORMAT, "K": [int(k) for k in ks], "sets": kinds, "tables": {},
                               "vocoders": {}}
    for name, kind in kinds.items():
        rows = table_conditions(exp_path, vocoders, ks, name, kind)
        if not rows:
            raise FileNotFoundError(f"{exp_path}: nothing scored for set {name!r} (no <condition>/{name}/metrics.json)")
        results["tables"][name] = _Table(rows, name).record()
    for vocoder in vocoders:
        sweeps = {str(k): exp_path / f"voc_{vocoder}_hard_k{k}" for k in ks}
        results["vocoders"][vocoder] = {"tau_sweeps": {k: load_sweep(d) for k, d in sweeps.items()
                                                       if (d / SWEEP_FILE).is_file()}}
    results["training"] = {m.name: training_summary(m) for m in sorted(exp_path.glob("voc_*"))
                           if (m / "history.yaml").is_file()}
    return results
