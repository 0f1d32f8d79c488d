"""The command line of the unit-vocoder recipe stages (``softtok voc <stage>``; alias ``python -m softtok.recipes.voc``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from softtok.common import run_job, setup_logging
from softtok.recipes.voc.evaluate import reference, speaker_ref
from softtok.recipes.voc.oracles import DEFAULT_ORACLES, ORACLES
from softtok.recipes.voc.report import results_markdown, write_results
from softtok.recipes.voc.results import collect_results
from softtok.recipes.voc.samples import DEFAULT_N
from softtok.recipes.voc.synthesis import CRITERIA, DEFAULT_TAU_FACTORS, sweep_tau, synth_eval
from softtok.reporting import read_commands, rerender

logger = logging.getLogger(__name__)


def _add_set_args(s: argparse.ArgumentParser) -> None:
    """--data, --id-sets, --ood-sets and --speaker-ref: what the scoring stages share."""
    s.add_argument("--data", required=True, help="folder of <set>/ data dirs")
    s.add_argument("--id-sets", nargs="*", default=[], help="resynthesis sets (target speaker)")
    s.add_argument("--ood-sets", nargs="*", default=[], help="conversion sets (other speakers)")
    s.add_argument("--speaker-ref", required=True, help="target speaker embedding (.npy from speaker-ref)")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.voc", description="Unit-vocoder recipe stages")
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
    s = stage("reference", "score natural audio and the oracles (natural mels through a mel-to-wave stage)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--oracles", nargs="*", choices=list(ORACLES), default=list(DEFAULT_ORACLES),
                   help="ceiling rows of the ID sets (default: %(default)s; none: no oracle)")
    _add_set_args(s)
    s = stage("synth-eval", "synthesise and score sets with hard and soft(τ*) (or continuous)")
    s.add_argument("--exp-dir", required=True)
    s.add_argument("--dump", required=True, help="folder of <set>/feats.scp")
    _add_set_args(s)
    r = stage("results", "results.json, RESULTS.md, PNGs and listening samples")
    r.add_argument("--exp", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--vocoders", nargs="+", default=["mel"], help="exp/voc_<vocoder>_{hard_k<K>,continuous}")
    r.add_argument("--k", type=int, nargs="+", required=True, help="codebook sizes: exp/voc_<vocoder>_hard_k<K> each")
    r.add_argument("--samples", type=int, default=DEFAULT_N,
                   help="listening samples: utterances per set, evenly spaced (0: none)")
    r.add_argument("--id-sets", nargs="*", default=[])
    r.add_argument("--ood-sets", nargs="*", default=[])
    r.add_argument("--commands", default="", help="file with the commands that produced the results")
    r.add_argument("--out-dir", required=True)
    g = stage("render", "RESULTS.md again from results.json (after a wording change; nothing re-run)")
    g.add_argument("--results-dir", required=True, help="folder of results.json and the RESULTS.md to rewrite")
    return p


def _run_stage(args) -> Dict[str, Any]:
    if args.stage == "speaker-ref":
        return speaker_ref(args.data, args.out, args.n)
    if args.stage == "sweep-tau":
        return sweep_tau(args.exp_dir, args.feats, args.data, args.factors, args.criterion)
    if args.stage == "reference":
        return reference(args.data, args.id_sets, args.ood_sets, args.speaker_ref, args.out_dir, args.oracles)
    if args.stage == "synth-eval":
        return synth_eval(args.exp_dir, args.dump, args.data, args.id_sets, args.ood_sets, args.speaker_ref)
    if args.stage == "render":
        return {"output": str(rerender(args.results_dir, results_markdown, "softtok voc render"))}
    results = collect_results(args.exp, args.vocoders, args.k, args.id_sets, args.ood_sets)
    write_results(results, args.exp, args.data, args.vocoders, args.out_dir, read_commands(args.commands), args.samples)
    return {"output": str(Path(args.out_dir) / "RESULTS.md")}


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    return run_job(args.stage, lambda: _run_stage(args), logger)
