"""Frame-level phone labels by CTC forced alignment (``torchaudio.functional.forced_align``).

A phone CTC model (a TokenASR trained with ``token_type: phone`` and ``ctc_weight: 1.0``) gives
per-frame log posteriors; the utterance's phone sequence is Viterbi-aligned to them. CTC paths
are peaky (a phone holds one or two frames, blank the rest), so blank runs are filled in:
runs before the first and after the last phone are silence; a run between two phones is split
at its middle, each phone taking at most ``max_extend`` seconds of it, the rest silence.
Labels are written one per *feature* frame (``utt PH PH ...``), so they line up with tokens;
an encoder that subsamples is mapped back by nearest frame.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torchaudio.functional as AF

from softtok.common import default_device
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.data import iterate
from softtok.downstream.asr.train import load_trained
from softtok.tokenizers.datadir import DataError, read_kaldi_map, write_kaldi_map
from softtok.tokenizers.fileio import save_yaml
from softtok.tokenizers.heads import build_head
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.jobs import feature_spec_of

logger = logging.getLogger(__name__)
SILENCE = "sil"


def fill_labels(spans: Sequence[Any], phones: Sequence[str], n_frames: int, max_extend: int,
                silence: str = SILENCE) -> List[str]:
    """One label per (encoder) frame from the aligned token spans (``.start``, ``.end``) of ``phones``."""
    if len(spans) != len(phones):
        raise ValueError(f"{len(spans)} aligned spans for {len(phones)} phones")
    labels = [silence] * n_frames
    for i, (span, phone) in enumerate(zip(spans, phones)):
        labels[span.start:span.end] = [phone] * (span.end - span.start)
        if i + 1 < len(spans):
            gap = spans[i + 1].start - span.end
            left, right = min((gap + 1) // 2, max_extend), min(gap // 2, max_extend)
            labels[span.end:span.end + left] = [phone] * left
            nxt = spans[i + 1]
            labels[nxt.start - right:nxt.start] = [phones[i + 1]] * right
    return labels


def to_feature_frames(labels: Sequence[str], n_feature_frames: int) -> List[str]:
    """Nearest-frame mapping of encoder-rate labels back to the feature rate (identity when equal)."""
    n = len(labels)
    return [labels[min(t * n // n_feature_frames, n - 1)] for t in range(n_feature_frames)]


def align_one(log_probs: torch.Tensor, target_ids: Sequence[int]) -> Tuple[List[Any], float]:
    """(token spans, path log-probability) of the Viterbi CTC alignment of ``target_ids`` to ``log_probs`` (T, V).

    Blank is index 0; one span per target (repeats are kept apart by the blank CTC puts between them).
    """
    targets = torch.tensor([list(target_ids)], dtype=torch.int32)
    with warnings.catch_warnings():  # torchaudio 2.9 marks it deprecated (maintenance phase); it still works
        warnings.filterwarnings("ignore", message=".*forced_align has been deprecated")
        path, scores = AF.forced_align(log_probs[None].float().cpu(), targets, blank=0)
    return AF.merge_tokens(path[0], scores[0].exp()), float(scores[0].sum())


class PhoneAligner:
    """A trained phone CTC model and its input head: log posteriors and frame labels of feature batches."""

    def __init__(self, exp_dir: str, device: Optional[str] = None, max_extend_s: float = 0.2):
        self.device = device or default_device()
        self.model, self.config, self.tokenizer = load_trained(exp_dir, device=self.device)
        if self.config.get("token_type") != "phone":
            raise ValueError(f"{exp_dir}: not a phone model (token_type {self.config.get('token_type', 'char')!r})")
        codebooks = [Codebook.load(p) for p in split_list(self.config.get("kmeans"))] or None
        self.head = build_head(self.config["head"], codebooks, **(self.config.get("head_conf") or {}))
        self.max_extend_s = max_extend_s

    @torch.inference_mode()
    def align(self, data: TokenASRData, phones: Dict[str, str], frame_rate: float,
              batch_frames: int = 20000) -> Dict[str, Any]:
        """{labels: {utt: [label per feature frame]}, failed: [utts], mean Viterbi path log-prob per frame, rate}."""
        labels, failed, total_lp, total_frames, enc_rate = {}, [], 0.0, 0, frame_rate
        for utts, tokens, lengths, _, _ in iterate(data, data.batches(batch_frames), self.head, None, self.device):
            enc, enc_lens = self.model.encode(tokens, lengths)
            log_probs = self.model.ctc.log_softmax(enc)
            for i, utt in enumerate(utts):
                n_enc, n_feat = int(enc_lens[i]), int(lengths[i])
                enc_rate = frame_rate * n_enc / n_feat
                ids = self.tokenizer.encode(phones[utt])
                try:
                    spans, path_lp = align_one(log_probs[i, :n_enc], ids)
                except RuntimeError as exc:  # too few frames for the phones (and their repeats)
                    logger.warning("%s: not aligned (%d frames, %d phones): %s", utt, n_enc, len(ids),
                                   str(exc).splitlines()[0])
                    failed.append(utt)
                    continue
                extend = int(round(self.max_extend_s * enc_rate))
                enc_labels = fill_labels(spans, phones[utt].split(), n_enc, extend)
                labels[utt] = to_feature_frames(enc_labels, n_feat)
                total_lp += path_lp
                total_frames += n_enc
        return {"labels": labels, "failed": failed, "mean_path_logprob": total_lp / max(total_frames, 1),
                "align_frame_rate": enc_rate}


def align_set(exp_dir: str, feats: str, phone_text: str, out_dir: str, max_extend_s: float = 0.2,
              device: Optional[str] = None) -> Dict[str, Any]:
    """Align every utterance of ``feats`` to its phones; write ``out_dir/phones.txt`` and ``align.yaml``."""
    spec = feature_spec_of(feats)
    if "frame_rate" not in spec:
        raise DataError(f"{Path(feats).with_name('feats.yaml')}: no frame_rate (needed to state the label rate)")
    phones = read_kaldi_map(Path(phone_text))
    data = TokenASRData(feats)
    missing = [u for u in data.utts if u not in phones]
    if missing:
        raise DataError(f"{phone_text}: no phones for utterance {missing[0]!r} ({len(missing)} missing)")
    aligner = PhoneAligner(exp_dir, device, max_extend_s)
    res = aligner.align(data, phones, float(spec["frame_rate"]))
    out = Path(out_dir)
    write_kaldi_map(out / "phones.txt", {u: " ".join(lab) for u, lab in res["labels"].items()})
    counts: Dict[str, int] = {}
    for lab in res["labels"].values():
        for p in lab:
            counts[p] = counts.get(p, 0) + 1
    meta = {"exp_dir": str(exp_dir), "feats": str(feats), "phone_text": str(phone_text),
            "frame_rate": float(spec["frame_rate"]), "align_frame_rate": round(res["align_frame_rate"], 3),
            "max_extend_s": max_extend_s, "silence": SILENCE, "utts": len(res["labels"]),
            "failed": res["failed"], "mean_path_logprob": round(res["mean_path_logprob"], 4),
            "label_counts": dict(sorted(counts.items()))}
    save_yaml(out / "align.yaml", meta)
    return {"utts": meta["utts"], "failed": len(res["failed"]), "silence_frames": counts.get(SILENCE, 0),
            "frames": sum(counts.values()), "output": str(out / "phones.txt")}
