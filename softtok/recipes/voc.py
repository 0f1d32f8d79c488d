"""Python stages of the unit-vocoder recipes: τ sweep on dev, synthesis + evaluation of every set, results.

    python -m softtok.recipes.voc speaker-ref --data data/train --out exp/speaker_ref.npy
    python -m softtok.recipes.voc sweep-tau --exp-dir exp/voc_mel_hard_k128 --feats dump/whisper/dev/feats.scp \\
        --data data/dev
    python -m softtok.recipes.voc reference --data data --id-sets test_id --ood-sets test_ood \\
        --speaker-ref exp/speaker_ref.npy --out-dir exp/reference
    python -m softtok.recipes.voc synth-eval --exp-dir exp/voc_mel_hard_k128 --dump dump/whisper --data data \\
        --id-sets test_id --ood-sets test_ood --speaker-ref exp/speaker_ref.npy
    python -m softtok.recipes.voc results --exp exp --k 128 --id-sets test_id --ood-sets test_ood --out-dir .

τ is chosen on dev only: dev is synthesised with the hard head and with soft heads over a grid of τ (multiples
of the median squared distance of dev frames to their nearest centroid); τ* has the lowest mean dev MCD (or
log-mel distance, ``--criterion mel``) and is then applied unchanged to every test set.

Sets are of two kinds. *ID* (resynthesis): the target speaker's held-out speech, the reference being the same
utterance: MCD (WORLD mel-cepstra, DTW), log-mel distance, F0 RMSE / log-F0 correlation / V/UV error, judge
WER/CER (Whisper tiny.en), speaker similarity to the target (Resemblyzer cosine to the mean embedding of
target training utterances). *OOD* (any-to-one conversion): other speakers' speech through the target's
vocoder: judge WER/CER against the reference text, speaker similarity to the target, F0 correlation and V/UV
error against the source. Synthesis goes to ``<exp>/synth_<head>[_tau<τ>]/<set>/`` (wav/, wav.scp,
synth.yaml), its scores to ``metrics.json`` and ``judge/`` (hyp, per_utt.txt, wer.txt) beside them; finished
parts are skipped on a re-run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from softtok.common import run_job, setup_logging
from softtok.downstream.scoring import load_per_utt, paired_bootstrap, write_score_dir
from softtok.downstream.vocoder import metrics as M
from softtok.recipes.common import (commands_section, generated_by, pyplot, read_commands, save_figure, tau_grid,
                                    training_summary, write_report)
from softtok.tokenizers.audio import read_audio, read_utterance, write_audio
from softtok.tokenizers.datadir import DataDir, evenly_spaced, load_data_dir, read_kaldi_map, write_kaldi_map
from softtok.tokenizers.fileio import atomic_write_text, load_yaml, save_npy, save_yaml
from softtok.tokenizers.kmeans import Codebook

logger = logging.getLogger(__name__)

DEFAULT_TAU_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0)
CRITERIA = {"mcd": "mcd_db", "mel": "mel_dist"}  # --criterion -> per-utterance metric minimised on dev
ID, OOD, NATURAL = "id", "ood", "natural"
GROUPS = {  # metric groups per kind of set
    ID: ("spectral", "f0", "judge", "speaker"),
    OOD: ("f0", "judge", "speaker"),
    NATURAL: ("judge", "speaker"),  # a reference against itself: only what does not compare to it
    "dev": ("spectral",),  # the τ sweep
}
F0_MAX_LEN_DIFF = 5  # 10 ms frames: a vocoder keeps the input's duration to within a token frame


def synth_name(head: str, tau: Optional[float] = None) -> str:
    """``synth_<head>[_tau<τ>]``: synthesis folders named by their settings, as decode folders are."""
    return f"synth_{head}" if tau is None else f"synth_{head}_tau{tau:g}"


# ----------------------------------------------------------------------------------------------- metrics


class Evaluator:
    """Scores synthesised (or natural) sets against references; loads the judge and speaker encoder once."""

    def __init__(self, speaker_ref: Optional[str] = None):
        self.target = _load_speaker_ref(speaker_ref) if speaker_ref else None
        self._judge: Optional[M.JudgeASR] = None
        self._speaker: Optional[M.SpeakerSimilarity] = None
        self._world: Dict[Tuple[str, str], M.WorldFeatures] = {}  # reference analyses, reused across conditions

    @property
    def judge(self) -> M.JudgeASR:
        if self._judge is None:
            self._judge = M.JudgeASR()
        return self._judge

    @property
    def speaker(self) -> M.SpeakerSimilarity:
        if self._speaker is None:
            self._speaker = M.SpeakerSimilarity()
        return self._speaker

    def evaluate(self, ref_dir: str | Path, out_dir: str | Path, kind: str,
                 syn_scp: Optional[str | Path] = None) -> Dict[str, Any]:
        """Write ``out_dir/metrics.json`` (summary + per utterance) for the ``kind`` of set; returns the summary.

        ``syn_scp``: the synthesised audio (wav.scp); None scores the references themselves (kind ``natural``).
        """
        t0 = time.perf_counter()
        groups = GROUPS[kind]
        ref = load_data_dir(ref_dir, require_text="judge" in groups)
        syn_paths = read_kaldi_map(Path(syn_scp)) if syn_scp else None
        utts = ref.utt_ids if syn_paths is None else [u for u in ref.utt_ids if u in syn_paths]
        if syn_paths is not None and len(utts) != len(syn_paths):
            extra = sorted(set(syn_paths) - set(ref.utt_ids))
            raise ValueError(f"{syn_scp}: utterance {extra[0]!r} is not in {ref_dir}")
        if not utts:
            raise ValueError(f"{syn_scp or ref_dir}: no utterances to evaluate")
        if "speaker" in groups and self.target is None:
            raise ValueError("speaker similarity needs --speaker-ref (the target speaker's embedding)")
        per_utt: Dict[str, Dict[str, float]] = {}
        syn_waves: Dict[str, np.ndarray] = {}
        for utt in utts:
            ref_wave = read_utterance(ref, utt).numpy()
            syn_wave = ref_wave if syn_paths is None else read_audio(syn_paths[utt], utt).numpy()
            syn_waves[utt] = syn_wave
            per_utt[utt] = self._utterance(ref, utt, ref_wave, syn_wave, groups)
        judge = self._judge_scores(ref, syn_waves, Path(out_dir) / "judge") if "judge" in groups else {}
        summary = {"n_utts": len(utts), **_means(per_utt), **judge, "seconds": round(time.perf_counter() - t0, 1)}
        save_json(Path(out_dir) / "metrics.json", {"kind": kind, "reference": str(Path(ref_dir).resolve()),
                                                   "synthesis": str(syn_scp) if syn_scp else None,
                                                   "summary": summary, "per_utt": per_utt})
        logger.info("%s (%s): %s", out_dir, kind, _summary_text(summary))
        return summary

    def _utterance(self, ref: DataDir, utt: str, ref_wave: np.ndarray, syn_wave: np.ndarray,
                   groups: Sequence[str]) -> Dict[str, float]:
        """The per-utterance metrics of the groups asked for."""
        out: Dict[str, float] = {}
        if "spectral" in groups or "f0" in groups:
            ref_feats = self._reference_world(ref, utt, ref_wave)
            syn_feats = M.world_features(syn_wave)
            if "spectral" in groups:
                out["mcd_db"] = M.mcd_of_features(ref_feats, syn_feats).mcd_db
                out["mel_dist"] = M.log_mel_distance(ref_wave, syn_wave, max_len_diff=F0_MAX_LEN_DIFF)
            if "f0" in groups:
                f0 = M.compare_f0(ref_feats.f0, syn_feats.f0, F0_MAX_LEN_DIFF)
                out.update(f0_rmse_hz=f0["f0_rmse_hz"], f0_corr=f0["f0_corr"], vuv_error=f0["vuv_error"])
        if "speaker" in groups:
            out["speaker_sim"] = self._speaker_similarity(utt, syn_wave)
        return out

    def _judge_scores(self, ref: DataDir, waves: Dict[str, np.ndarray], out_dir: Path) -> Dict[str, float]:
        """Corpus WER/CER of the judge's transcripts against the reference text; hyp and per_utt.txt in ``out_dir``."""
        utts = list(waves)
        hyps = dict(zip(utts, self.judge.transcribe([waves[u] for u in utts])))
        counts = write_score_dir(out_dir, {u: ref.text[u] for u in utts}, hyps)
        return {"wer": counts["wer"], "cer": counts["cer"]}

    def _reference_world(self, ref: DataDir, utt: str, wave: np.ndarray) -> M.WorldFeatures:
        key = (str(ref.path), utt)
        if key not in self._world:
            self._world[key] = M.world_features(wave)
        return self._world[key]

    def _speaker_similarity(self, utt: str, wave: np.ndarray) -> float:
        """Cosine to the target embedding; NaN (with a warning) when Resemblyzer finds no speech in the output."""
        try:
            return M.cosine_similarity(self.speaker.embed(wave), self.target)
        except ValueError as exc:
            logger.warning("utterance %s: no speaker similarity (%s)", utt, exc)
            return math.nan


def _means(per_utt: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Mean of every per-utterance metric over utterances where it is defined (NaN: F0 with no voiced frame)."""
    keys = next(iter(per_utt.values())).keys()
    out = {}
    for key in keys:
        values = np.array([row[key] for row in per_utt.values()], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[key] = round(float(finite.mean()), 4) if finite.size else math.nan
    return out


def _summary_text(summary: Dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())


def save_json(path: Path, data: Dict[str, Any]) -> None:
    """JSON with NaN written as null (valid JSON for every reader), atomically."""
    atomic_write_text(path, json.dumps(_nan_to_none(data), indent=1) + "\n")


def load_json(path: Path) -> Dict[str, Any]:
    """A JSON file written by :func:`save_json`; a missing file is a one-line error naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------- speaker


def speaker_ref(data_dir: str, out: str, n: int = 50) -> Dict[str, Any]:
    """The target speaker's embedding: L2-normalised mean Resemblyzer embedding of ``n`` evenly spaced utterances."""
    data = load_data_dir(data_dir)
    utts = evenly_spaced(data.utt_ids, n)
    encoder = M.SpeakerSimilarity()
    embeddings = np.stack([encoder.embed(read_utterance(data, u).numpy()) for u in utts])
    mean = embeddings.mean(axis=0)
    mean /= np.linalg.norm(mean)
    save_npy(out, mean.astype(np.float32))
    sims = embeddings @ mean
    save_yaml(Path(out).with_suffix(".yaml"), {"data": str(Path(data_dir).resolve()), "n_utts": len(utts),
                                               "utts": utts, "mean_cosine_to_centroid": round(float(sims.mean()), 4)})
    return {"utts": len(utts), "mean_cosine": round(float(sims.mean()), 3), "output": out}


def _load_speaker_ref(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: speaker embedding not found (run the speaker-ref stage first)")
    ref = np.load(path)
    if ref.ndim != 1 or not np.isfinite(ref).all():
        raise ValueError(f"{path}: expected a finite 1-D speaker embedding, got shape {ref.shape}")
    return ref


# ----------------------------------------------------------------------------------------------- synthesis


def _synthesizer(config: Dict[str, Any], exp: Path) -> Callable[..., Dict[str, Any]]:
    """``synthesize`` of the model's vocoder module (softtok.downstream.vocoder.<vocoder>)."""
    name = config.get("vocoder")
    if not name:
        raise ValueError(f"{exp / 'config.yaml'}: no 'vocoder' key; is this a vocoder experiment?")
    try:
        module = importlib.import_module(f"softtok.downstream.vocoder.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"{exp / 'config.yaml'}: unknown vocoder {name!r}") from None
    return module.synthesize


def synthesize_set(exp_dir: str | Path, feats: str, head: str, tau: Optional[float], set_name: str) -> Path:
    """``<exp>/synth_<head>[_tau<τ>]/<set>/`` with the model's vocoder; skipped when synth.yaml is there."""
    exp = Path(exp_dir)
    out = exp / synth_name(head, tau) / set_name
    if not (out / "synth.yaml").is_file():
        synthesize = _synthesizer(load_yaml(exp / "config.yaml"), exp)
        synthesize(exp_dir=str(exp), feats=feats, out_dir=str(out), head=head,
                   head_conf={"tau": tau} if tau is not None else None)
    return out


def model_heads(exp_dir: str | Path) -> List[Tuple[str, Optional[float]]]:
    """[(head, τ)]: hard and soft(τ* from dev) for token models, continuous for feature models."""
    exp = Path(exp_dir)
    if load_yaml(exp / "config.yaml").get("n_tokens") is None:
        return [("continuous", None)]
    sweep = exp / "tau_sweep.yaml"
    if not sweep.is_file():
        raise FileNotFoundError(f"{sweep}: run sweep-tau on dev first (τ is chosen on dev only)")
    return [("hard", None), ("soft", load_yaml(sweep)["best"]["tau"])]


def sweep_tau(exp_dir: str, feats: str, data_dir: str, factors: Sequence[float] = DEFAULT_TAU_FACTORS,
              criterion: str = "mcd", set_name: str = "dev") -> Dict[str, Any]:
    """Synthesise dev with the hard head and soft heads over the τ grid; τ* = lowest mean dev MCD (or mel dist)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    exp = Path(exp_dir)
    config = load_yaml(exp / "config.yaml")
    if config.get("n_tokens") is None:
        raise ValueError(f"{exp}: a continuous-input model has no τ to sweep")
    scale, grid = tau_grid(Codebook.load(config["kmeans"]), feats, factors)
    evaluator = Evaluator()

    def score(head: str, tau: Optional[float]) -> Dict[str, float]:
        out = synthesize_set(exp, feats, head, tau, set_name)
        if (out / "metrics.json").is_file():
            return load_json(out / "metrics.json")["summary"]
        return evaluator.evaluate(data_dir, out, "dev", out / "wav.scp")

    hard = score("hard", None)
    rows = []
    for f, tau in grid:
        res = score("soft", tau)
        rows.append({"factor": f, "tau": tau, "mcd_db": res["mcd_db"], "mel_dist": res["mel_dist"]})
        logger.info("τ = %.4g (%.3g × median d²): dev MCD %.3f dB, log-mel distance %.4f", tau, f, res["mcd_db"],
                    res["mel_dist"])
    key = CRITERIA[criterion]
    best = dict(min(rows, key=lambda r: (r[key], r["tau"])))
    sweep = {"set": set_name, "criterion": key, "median_sqdist": scale,
             "hard": {"mcd_db": hard["mcd_db"], "mel_dist": hard["mel_dist"]}, "sweep": rows, "best": best}
    save_yaml(exp / "tau_sweep.yaml", sweep)
    return {"tau": best["tau"], "factor": best["factor"], f"dev_{key}_soft": round(best[key], 4),
            f"dev_{key}_hard": round(hard[key], 4)}


def synth_eval(exp_dir: str, dump: str, data: str, id_sets: Sequence[str], ood_sets: Sequence[str],
               speaker_ref_path: str) -> Dict[str, Any]:
    """Synthesise and score every set with the model's heads (hard + soft(τ*), or continuous)."""
    evaluator = Evaluator(speaker_ref_path)
    done = 0
    for name, kind in [(s, ID) for s in id_sets] + [(s, OOD) for s in ood_sets]:
        for head, tau in model_heads(exp_dir):
            out = synthesize_set(exp_dir, f"{dump}/{name}/feats.scp", head, tau, name)
            if not (out / "metrics.json").is_file():
                evaluator.evaluate(f"{data}/{name}", out, kind, out / "wav.scp")
                done += 1
    return {"evaluated": done, "sets": len(id_sets) + len(ood_sets)}


def griffin_lim_oracle(data_dir: str | Path, out_dir: Path) -> Path:
    """The references' own log-mel through Griffin-Lim (the mel vocoder's ceiling): ``out_dir/wav.scp``."""
    from softtok.downstream.vocoder.mel import griffin_lim, log_mel

    if (out_dir / "wav.scp").is_file():
        return out_dir / "wav.scp"
    data = load_data_dir(data_dir)
    wav_scp = {}
    for utt in data.utt_ids:
        path = (out_dir / "wav" / f"{utt}.wav").resolve()
        write_audio(path, griffin_lim(log_mel(read_utterance(data, utt))))
        wav_scp[utt] = str(path)
    write_kaldi_map(out_dir / "wav.scp", wav_scp)
    return out_dir / "wav.scp"


def reference(data: str, id_sets: Sequence[str], ood_sets: Sequence[str], speaker_ref_path: str,
              out_dir: str) -> Dict[str, Any]:
    """Reference rows: natural audio of every set, and the Griffin-Lim oracle of the ID sets."""
    evaluator = Evaluator(speaker_ref_path)
    out = Path(out_dir)
    done = 0
    for name in list(id_sets) + list(ood_sets):
        if not (out / NATURAL / name / "metrics.json").is_file():
            evaluator.evaluate(f"{data}/{name}", out / NATURAL / name, NATURAL)
            done += 1
    for name in id_sets:
        oracle = out / "gl_oracle" / name
        if not (oracle / "metrics.json").is_file():
            evaluator.evaluate(f"{data}/{name}", oracle, ID, griffin_lim_oracle(f"{data}/{name}", oracle))
            done += 1
    return {"evaluated": done, "output": str(out)}


# ----------------------------------------------------------------------------------------------- results

COMPARED = ("mcd_db", "mel_dist", "f0_rmse_hz", "f0_corr", "vuv_error", "speaker_sim")  # soft − hard, per utt


def _conditions(exp: Path, vocoder: str, k: int) -> Dict[str, Tuple[Path, Optional[float]]]:
    """{condition: (synth folder, τ)} of one vocoder: hard, soft(τ*), continuous (those that exist)."""
    hard_exp, cont_exp = exp / f"voc_{vocoder}_hard_k{k}", exp / f"voc_{vocoder}_continuous"
    conditions: Dict[str, Tuple[Path, Optional[float]]] = {}
    if (hard_exp / "config.yaml").is_file():
        for head, tau in model_heads(hard_exp):
            conditions[head] = (hard_exp / synth_name(head, tau), tau)
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
        conditions = _conditions(exp_path, vocoder, k)
        per_voc: Dict[str, Any] = {"sets": {}}
        for name in kinds:
            metrics = {c: load_json(d / name / "metrics.json") for c, (d, _) in conditions.items()
                       if (d / name / "metrics.json").is_file()}
            entry: Dict[str, Any] = {c: {**m["summary"], **({"tau": conditions[c][1]} if conditions[c][1] else {})}
                                     for c, m in metrics.items()}
            if "soft" in metrics and "hard" in metrics:
                entry["soft_vs_hard"] = _paired(metrics["hard"], metrics["soft"], conditions["hard"][0] / name,
                                                conditions["soft"][0] / name)
            per_voc["sets"][name] = entry
        hard_exp = exp_path / f"voc_{vocoder}_hard_k{k}"
        if (hard_exp / "tau_sweep.yaml").is_file():
            per_voc["tau_sweep"] = load_yaml(hard_exp / "tau_sweep.yaml")
        results["vocoders"][vocoder] = per_voc
    results["training"] = {m.name: training_summary(m) for m in sorted(exp_path.glob("voc_*"))
                           if (m / "history.yaml").is_file()}
    return results


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
        for cond, (folder, tau) in _conditions(exp, vocoder, k).items():
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
              f"{'MCD' if key == 'mcd_db' else 'log-mel distance'}.", ""]
    return lines


def results_markdown(results: Dict[str, Any], commands: str) -> str:
    """The RESULTS.md text, all from results.json: one table per set, the τ sweeps, training, figures."""
    lines = ["# Results", "", f"{generated_by('softtok.recipes.voc')}. K = {results['K']}. Soft (τ*) uses the τ "
             "chosen on dev (never on a test set); soft − hard is a paired bootstrap over utterances (negative: "
             "soft lower). Speaker similarity is the Resemblyzer cosine to the target speaker's mean embedding "
             "(training utterances); the judge is Whisper tiny.en (CTranslate2, beam 5). ↓ lower is better, "
             "↑ higher is better.", ""] + commands_section(commands)
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
    write_report(out, _nan_to_none(results), results_markdown(results, commands))


# ----------------------------------------------------------------------------------------------- CLI


def _add_set_args(s: argparse.ArgumentParser) -> None:
    """--data, --id-sets, --ood-sets and --speaker-ref: what the scoring stages share."""
    s.add_argument("--data", required=True, help="folder of <set>/ data dirs")
    s.add_argument("--id-sets", nargs="*", default=[], help="resynthesis sets (target speaker)")
    s.add_argument("--ood-sets", nargs="*", default=[], help="conversion sets (other speakers)")
    s.add_argument("--speaker-ref", required=True, help="target speaker embedding (.npy from speaker-ref)")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Unit-vocoder recipe stages")
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--num-threads", type=int, help="torch (and judge) CPU threads (default: all)")
    sub = p.add_subparsers(dest="stage", required=True)

    def stage(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, parents=[threads])

    s = stage("speaker-ref", "target speaker embedding (mean Resemblyzer d-vector)")
    s.add_argument("--data", required=True, help="target speaker's training data dir")
    s.add_argument("--n", type=int, default=50, help="utterances (evenly spaced)")
    s.add_argument("--out", required=True, help="embedding .npy (a .yaml is written beside it)")
    s = stage("sweep-tau", "synthesise dev over the τ grid; write tau_sweep.yaml")
    s.add_argument("--exp-dir", required=True)
    s.add_argument("--feats", required=True, help="dev feats.scp")
    s.add_argument("--data", required=True, help="dev data dir (reference audio)")
    s.add_argument("--factors", type=float, nargs="+", default=list(DEFAULT_TAU_FACTORS))
    s.add_argument("--criterion", choices=sorted(CRITERIA), default="mcd")
    s = stage("reference", "score natural audio and the Griffin-Lim oracle")
    s.add_argument("--out-dir", required=True)
    _add_set_args(s)
    s = stage("synth-eval", "synthesise and score sets with hard and soft(τ*) (or continuous)")
    s.add_argument("--exp-dir", required=True)
    s.add_argument("--dump", required=True, help="folder of <set>/feats.scp")
    _add_set_args(s)
    r = stage("results", "results.json, RESULTS.md and PNGs")
    r.add_argument("--exp", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--vocoders", nargs="+", default=["mel"], help="exp/voc_<vocoder>_{hard_k<K>,continuous}")
    r.add_argument("--k", type=int, required=True)
    r.add_argument("--id-sets", nargs="*", default=[])
    r.add_argument("--ood-sets", nargs="*", default=[])
    r.add_argument("--commands", default="", help="file with the commands that produced the results")
    r.add_argument("--out-dir", required=True)
    return p


def _run_stage(args) -> Dict[str, Any]:
    if args.stage == "speaker-ref":
        return speaker_ref(args.data, args.out, args.n)
    if args.stage == "sweep-tau":
        return sweep_tau(args.exp_dir, args.feats, args.data, args.factors, args.criterion)
    if args.stage == "reference":
        return reference(args.data, args.id_sets, args.ood_sets, args.speaker_ref, args.out_dir)
    if args.stage == "synth-eval":
        return synth_eval(args.exp_dir, args.dump, args.data, args.id_sets, args.ood_sets, args.speaker_ref)
    results = collect_results(args.exp, args.vocoders, args.k, args.id_sets, args.ood_sets)
    write_results(results, args.exp, args.data, args.vocoders, args.out_dir, read_commands(args.commands))
    return {"output": str(Path(args.out_dir) / "RESULTS.md")}


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    return run_job(args.stage, lambda: _run_stage(args), logger)


if __name__ == "__main__":
    raise SystemExit(main())
