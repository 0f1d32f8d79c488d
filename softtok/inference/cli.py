"""``softtok export`` / ``transcribe`` / ``resynthesize``: a trained model as a bundle, and soft inference from audio.

    softtok export exp/asr_hard_k128 --out-dir bundles/asr_hard_k128
    softtok transcribe bundles/asr_hard_k128 talk.wav clips/ data/test --head soft --format jsonl --ref data/test/text
    softtok resynthesize bundles/voc_mel_hard_k128 speech.flac --out-dir converted/
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import int_at_least, run_job, setup_logging
from softtok.tokenizers.audio import TARGET_SAMPLE_RATE, write_audio
from softtok.tokenizers.datadir import DataError, read_kaldi_map, write_kaldi_map
from softtok.tokenizers.fileio import ArkScpWriter, write_num_frames
from softtok.tokenizers.heads import HEADS

logger = logging.getLogger("softtok")

WINDOWS_HELP = ("Audio longer than the model's longest training utterance (config max_utt_frames, e.g. 1500 frames "
                "= 30 s) is cut into windows no longer than that, each cut at the quietest 20 ms of the 2 s before the "
                "limit; the windows are decoded as utterances of their own and their texts joined with spaces.")


class InputFailures:
    """Inputs that could not be read or featurised: one error line each, the rest still processed."""

    def __init__(self) -> None:
        self.keys: List[str] = []

    def add(self, key: str, source: str, exc: Exception) -> None:
        logger.error("%s (%s): %s", key, source, exc)
        self.keys.append(key)


def extract(model: Any, items: List[Any], out_dir: Path, failures: InputFailures) -> Tuple[str, Dict[str, List[str]]]:
    """Features of every readable input into ``out_dir/feats.scp`` (one entry per window), and each key's windows."""
    windows: Dict[str, List[str]] = {}
    scp = out_dir / "feats.scp"
    with ArkScpWriter(out_dir / "feats.ark", scp) as writer, logging_redirect_tqdm():
        for item in tqdm(items, desc="features", unit="utt"):
            try:
                parts = model.window_features(item.read(TARGET_SAMPLE_RATE), item.key)
            except (DataError, ValueError, RuntimeError) as exc:
                failures.add(item.key, item.source, exc)
                continue
            for key, mat in parts.items():
                writer.write(key, mat)
            windows[item.key] = list(parts)
    if windows:
        write_num_frames(scp)
    return str(scp), windows


def quiet_load(args: argparse.Namespace) -> Any:
    """The bundle's model, with what its libraries print on import (espnet: flash-attention) sent to stderr, so
    standard output holds only the results."""
    from softtok.inference.model import load

    with contextlib.redirect_stdout(sys.stderr):
        return load(args.bundle, args.device, args.checkpoint)


def transcribe(args: argparse.Namespace) -> Dict[str, Any]:
    """Text of every input, written as each batch is decoded; WER/CER against ``--ref``."""
    from softtok.downstream.asr.data import TokenASRData
    from softtok.inference.inputs import collect_inputs
    from softtok.inference.model import ASRModel

    model = quiet_load(args)
    if not isinstance(model, ASRModel):
        raise ValueError(f"{args.bundle}: a {model.bundle.kind} bundle; transcribe needs an ASR bundle (resynthesize?)")
    items = collect_inputs(args.inputs)
    with contextlib.redirect_stdout(sys.stderr):  # espnet prints on building the encoder
        decoder = model.decoder(args.head, args.tau, args.tau_factor, args.top_k, args.search)
    settings = {"head": decoder.head.name, "settings": decoder.head.settings(), "tau": decoder.head.tau,
                "top_k": decoder.head.top_k, "search": args.search}
    failures, hyps = InputFailures(), {}
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        with tempfile.TemporaryDirectory() as tmp:
            feats, windows = extract(model, items, Path(tmp), failures)
            pending = {w: key for key, keys in windows.items() for w in keys}
            texts: Dict[str, List[Optional[str]]] = {key: [None] * len(keys) for key, keys in windows.items()}
            if windows:
                data = TokenASRData(feats)
                groups = decoder.groups(data, args.batch_frames)
                with logging_redirect_tqdm():
                    for batch in decoder.stream(data, tqdm(groups, desc=f"decode {settings['settings']}",
                                                           unit="batch")):
                        for window, text in batch.items():
                            key = pending.pop(window)
                            texts[key][windows[key].index(window)] = text
                            if all(t is not None for t in texts[key]):
                                hyps[key] = " ".join(t for t in texts[key] if t)
                                out.write(_line(key, hyps[key], settings, args.format))
                                out.flush()
    finally:
        if args.out:
            out.close()
    summary: Dict[str, Any] = {"utts": len(hyps), "failed": len(failures.keys), **settings}
    if args.ref:
        summary.update(score_against(args.ref, hyps))
    if failures.keys:
        raise InputsFailed(f"{len(failures.keys)} of {len(items)} inputs failed (named above); the others were "
                           f"transcribed: {summary}")
    return summary


class InputsFailed(ValueError):
    """Some inputs could not be processed (each was named on its own line)."""


def _line(key: str, text: str, settings: Dict[str, Any], fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps({"key": key, "text": text, **settings}, ensure_ascii=False) + "\n"
    return f"{key} {text}\n"  # as Kaldi text files (and the recipe's hyp) write it, empty text included


def score_against(ref_path: str, hyps: Dict[str, str]) -> Dict[str, Any]:
    """WER/CER (%) of the hypotheses against a Kaldi text file (the keys both have)."""
    from softtok.downstream.scoring import score

    refs = read_kaldi_map(Path(ref_path))
    both = sorted(set(refs) & set(hyps))
    if not both:
        raise DataError(f"{ref_path}: no key in common with the transcribed inputs")
    result = score({k: refs[k] for k in both}, {k: hyps[k] for k in both})
    return {"ref_utts": len(both), "wer": round(result["wer"], 2), "cer": round(result["cer"], 2)}


def resynthesize(args: argparse.Namespace) -> Dict[str, Any]:
    """``OUT_DIR/wav/<key>.wav`` (16 kHz) of every input through the head and the vocoder, and ``wav.scp``."""
    from softtok.inference.inputs import collect_inputs
    from softtok.inference.model import VocoderModel

    model = quiet_load(args)
    if not isinstance(model, VocoderModel):
        raise ValueError(f"{args.bundle}: a {model.bundle.kind} bundle; resynthesize needs a vocoder bundle")
    items = collect_inputs(args.inputs)
    failures, wav_scp = InputFailures(), {}
    out = Path(args.out_dir)
    head = model.head(args.head, args.tau, args.tau_factor, args.top_k)
    with logging_redirect_tqdm():
        for item in tqdm(items, desc=f"resynthesize {head.settings()}", unit="utt"):
            try:
                wave = model.wave_of(item.read(TARGET_SAMPLE_RATE), head, TARGET_SAMPLE_RATE, item.key)
            except (DataError, ValueError, RuntimeError) as exc:
                failures.add(item.key, item.source, exc)
                continue
            path = (out / "wav" / f"{item.key}.wav").resolve()
            write_audio(path, np.asarray(wave), model.sample_rate)
            wav_scp[item.key] = str(path)
    if wav_scp:
        write_kaldi_map(out / "wav.scp", wav_scp)
    summary = {"utts": len(wav_scp), "failed": len(failures.keys), "head": head.settings(), "output": str(out)}
    if failures.keys:
        raise InputsFailed(f"{len(failures.keys)} of {len(items)} inputs failed (named above): {summary}")
    return summary


def export(args: argparse.Namespace) -> Dict[str, Any]:
    from softtok.inference.bundle import export_bundle

    return export_bundle(args.exp_dir, args.out_dir, args.overwrite)


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    """Bundle, inputs, head and τ, device: what transcribe and resynthesize share."""
    p.add_argument("bundle", help="a bundle folder (softtok export)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files (any format soundfile reads, any sample rate), folders of them, a wav.scp or a "
                        "Kaldi data dir")
    p.add_argument("--head", choices=sorted(HEADS), help="default: the bundle's (soft at its dev τ*, or hard where "
                   "no τ beat hard on dev); soft when --tau, --tau-factor or --top-k is given")
    tau = p.add_mutually_exclusive_group()
    tau.add_argument("--tau", type=float, help="soft temperature (default: the bundle's τ*)")
    tau.add_argument("--tau-factor", type=float, help="τ as this multiple of the bundle's τ scale (median nearest "
                                                      "squared distance on dev)")
    p.add_argument("--top-k", type=int_at_least(1), help="soft: keep the k nearest centres, renormalised")
    p.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--checkpoint", action="append",
                   help="featurizer checkpoint where it no longer lies where the bundle says (once per source; "
                        "checked against the bundle's sha256)")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m softtok.inference.cli",
                                description="Model bundles and soft inference from audio.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="pack a trained experiment into a bundle folder",
                       description="Pack a trained ASR or vocoder experiment (config, weights, codebooks, τ* and its "
                                   "dev sweep, featurizer spec with the checkpoint's sha256) into one folder.")
    e.add_argument("exp_dir")
    e.add_argument("--out-dir", required=True)
    e.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    t = sub.add_parser("transcribe", help="text of audio files with an ASR bundle (hard, soft or continuous)",
                       description="Transcribe audio with an ASR bundle. Inputs are featurised, batched by length and "
                                   "decoded as the recipe's decode stage does; each text is written as its batch is "
                                   "done. " + WINDOWS_HELP + " An unreadable, empty or non-audio input is one error "
                                   "line naming it; the others are still transcribed and the exit status is 1.")
    _add_inference_args(t)
    t.add_argument("--search", choices=["greedy", "beam"], default="greedy")
    t.add_argument("--batch-frames", type=int_at_least(1), default=20000, help="frames per greedy batch")
    t.add_argument("--format", choices=["text", "jsonl"], default="text",
                   help="text: Kaldi 'key text' lines; jsonl: one JSON object per input with the head settings")
    t.add_argument("--out", help="write the texts here (default: standard output)")
    t.add_argument("--ref", help="Kaldi text file: print WER/CER of the inputs it holds")
    r = sub.add_parser("resynthesize", help="16 kHz speech of audio files with a vocoder bundle",
                       description="Resynthesize (convert) audio with a unit-vocoder bundle: OUT_DIR/wav/<key>.wav and "
                                   "OUT_DIR/wav.scp. An unreadable input is one error line; the others are still done.")
    _add_inference_args(r)
    r.add_argument("--out-dir", required=True)
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    job = {"export": export, "transcribe": transcribe, "resynthesize": resynthesize}[args.command]
    return run_job(args.command, lambda: job(args), logger)


if __name__ == "__main__":
    raise SystemExit(main())
