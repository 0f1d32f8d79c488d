"""Scoring of synthesised (or natural) sets against their references: the kinds of set and their metric groups,
the :class:`Evaluator` (metrics.json, judge/, judge_pocketsphinx/), the target speaker's embedding and the reference
rows (natural audio, the oracles of :mod:`.oracles`)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from softtok.downstream.scoring import write_score_dir
from softtok.downstream.vocoder import metrics as M
from softtok.downstream.vocoder.judges import DNSMOS, PocketsphinxJudge
from softtok.recipes.voc.oracles import DEFAULT_ORACLES, mel_oracle, oracle
from softtok.reporting import save_json
from softtok.tokenizers.audio import read_audio, read_utterance
from softtok.tokenizers.datadir import DataDir, evenly_spaced, load_data_dir, read_kaldi_map
from softtok.tokenizers.fileio import save_npy, save_yaml

logger = logging.getLogger(__name__)

ID, OOD, NATURAL = "id", "ood", "natural"
GROUPS = {  # metric groups per kind of set
    ID: ("spectral", "f0", "judge", "speaker", "naturalness"),
    OOD: ("f0", "judge", "speaker", "naturalness"),
    NATURAL: ("judge", "speaker", "naturalness"),  # a reference against itself: only what does not compare to it
    "dev": ("spectral",),  # the τ sweep
}
F0_MAX_LEN_DIFF = 5  # 10 ms frames: a vocoder keeps the input's duration to within a token frame
# the ASR judges: Evaluator property, output folder, suffix of their summary keys (wer, cer)
JUDGES = (("judge", "judge", ""), ("pocketsphinx", "judge_pocketsphinx", "_ps"))


class Evaluator:
    """Scores synthesised (or natural) sets against references; loads the judges, DNSMOS and speaker encoder once."""

    def __init__(self, speaker_ref: Optional[str] = None):
        self.target = _load_speaker_ref(speaker_ref) if speaker_ref else None
        self._judge: Optional[M.JudgeASR] = None
        self._pocketsphinx: Optional[PocketsphinxJudge] = None
        self._dnsmos: Optional[DNSMOS] = None
        self._speaker: Optional[M.SpeakerSimilarity] = None
        self._world: Dict[Tuple[str, str], M.WorldFeatures] = {}  # reference analyses, reused across conditions

    @property
    def judge(self) -> M.JudgeASR:
        if self._judge is None:
            self._judge = M.JudgeASR()
        return self._judge

    @property
    def pocketsphinx(self) -> PocketsphinxJudge:
        if self._pocketsphinx is None:
            self._pocketsphinx = PocketsphinxJudge()
        return self._pocketsphinx

    @property
    def dnsmos(self) -> DNSMOS:
        if self._dnsmos is None:
            self._dnsmos = DNSMOS()
        return self._dnsmos

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
        judge = self._judge_scores(ref, syn_waves, Path(out_dir)) if "judge" in groups else {}
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
        if "naturalness" in groups:
            out.update(self.dnsmos.score(syn_wave))
        return out

    def _judge_scores(self, ref: DataDir, waves: Dict[str, np.ndarray], out_dir: Path) -> Dict[str, float]:
        """Corpus WER/CER of each judge's transcripts against the reference text: Whisper's as ``wer``/``cer``
        (hyp, per_utt.txt in ``out_dir/judge``), PocketSphinx's as ``wer_ps``/``cer_ps`` (``judge_pocketsphinx``)."""
        utts = list(waves)
        refs = {u: ref.text[u] for u in utts}
        out: Dict[str, float] = {}
        for attr, folder, suffix in JUDGES:
            hyps = dict(zip(utts, getattr(self, attr).transcribe([waves[u] for u in utts])))
            counts = write_score_dir(out_dir / folder, refs, hyps)
            out.update({f"wer{suffix}": counts["wer"], f"cer{suffix}": counts["cer"]})
        return out

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


def reference(data: str, id_sets: Sequence[str], ood_sets: Sequence[str], speaker_ref_path: str,
              out_dir: str, oracles: Sequence[str] = DEFAULT_ORACLES) -> Dict[str, Any]:
    """Reference rows: natural audio of every set, and each of ``oracles`` (the natural mel through a mel → wave
    stage alone: :mod:`.oracles`) of the ID sets."""
    stages = [oracle(name) for name in oracles]  # an unknown name fails before anything is scored
    evaluator = Evaluator(speaker_ref_path)
    out = Path(out_dir)
    done = 0
    for name in list(id_sets) + list(ood_sets):
        if not (out / NATURAL / name / "metrics.json").is_file():
            evaluator.evaluate(f"{data}/{name}", out / NATURAL / name, NATURAL)
            done += 1
    for stage in stages:
        for name in id_sets:
            folder = out / stage.folder / name
            if not (folder / "metrics.json").is_file():
                evaluator.evaluate(f"{data}/{name}", folder, ID, mel_oracle(f"{data}/{name}", folder, stage))
                done += 1
    return {"evaluated": done, "output": str(out)}
