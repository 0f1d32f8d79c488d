"""Data-set builders for the ASR recipes: speaker splits, attribute subsets, speed perturbation, noise.

Every builder validates its inputs before writing anything, writes Kaldi data dirs with absolute
audio paths and sorted keys, writes files atomically (unchanged files are left untouched), skips
audio that a previous run already wrote, and returns the written data dir (a pair for two-way splits).
This module is their command line (``softtok sets``); the builders are in :mod:`.subsets`
(sets of existing utterances) and :mod:`.augment` (sets with new audio: speed perturbation, noise).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from softtok.recipes.augment import NOISE_TYPES, add_noise, speed_perturb
from softtok.recipes.subsets import (ADULT_AGE, combine_data_dirs, split_adults_children, split_by_attribute,
                                     split_by_speaker, split_fsdd_accents)
from softtok.tokenizers.datadir import DataError

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- CLI


def _cmd_split_speakers(args: argparse.Namespace) -> Sequence[Path]:
    return split_by_speaker(args.src, args.out_a, args.out_b, args.fraction, args.seed)


def _cmd_split_age(args: argparse.Namespace) -> Sequence[Path]:
    return split_adults_children(args.src, args.out_adults, args.out_children, args.adult_age)


def _cmd_split_accent(args: argparse.Namespace) -> Sequence[Path]:
    return split_fsdd_accents(args.src, args.out_us, args.out_nonus)


def _cmd_split_attribute(args: argparse.Namespace) -> Sequence[Path]:
    return split_by_attribute(args.src, args.out_prefix, args.file)


def _cmd_combine(args: argparse.Namespace) -> Sequence[Path]:
    return [combine_data_dirs(args.src, args.out)]


def _cmd_speed(args: argparse.Namespace) -> Sequence[Path]:
    return [speed_perturb(args.src, args.out, args.factors)]


def _cmd_noise(args: argparse.Namespace) -> Sequence[Path]:
    return [add_noise(args.src, args.out, args.snr, args.noise, args.seed, args.noise_source)]


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Subcommands split-speakers, split-age, split-accent, split-attribute, combine, speed-perturb, add-noise."""
    parser = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.sets", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split-speakers", help="hold out a fraction of speakers")
    p.add_argument("--src", required=True)
    p.add_argument("--out-a", required=True, help="kept speakers (train)")
    p.add_argument("--out-b", required=True, help="held-out speakers (dev)")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_split_speakers)
    p = sub.add_parser("split-age", help="adults vs children by spk2age")
    p.add_argument("--src", required=True)
    p.add_argument("--out-adults", required=True)
    p.add_argument("--out-children", required=True)
    p.add_argument("--adult-age", type=int, default=ADULT_AGE)
    p.set_defaults(func=_cmd_split_age)
    p = sub.add_parser("split-accent", help="FSDD US vs non-US speakers by spk2accent")
    p.add_argument("--src", required=True)
    p.add_argument("--out-us", required=True)
    p.add_argument("--out-nonus", required=True)
    p.set_defaults(func=_cmd_split_accent)
    p = sub.add_parser("split-attribute", help="one dir <out-prefix>_<value> per value of a per-speaker file")
    p.add_argument("--src", required=True)
    p.add_argument("--out-prefix", required=True)
    p.add_argument("--file", required=True, help="per-speaker file, e.g. spk2l1")
    p.set_defaults(func=_cmd_split_attribute)
    p = sub.add_parser("combine", help="all utterances of several data dirs in one")
    p.add_argument("--src", required=True, nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_combine)
    p = sub.add_parser("speed-perturb", help="sox-style speed perturbation")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    p.set_defaults(func=_cmd_speed)
    p = sub.add_parser("add-noise", help="mix babble or pink noise at an SNR")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--snr", type=float, required=True, help="dB")
    p.add_argument("--noise", default="babble", help=f"one of {', '.join(NOISE_TYPES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-source", default=None, help="data dir of babble talkers (default: --src)")
    p.set_defaults(func=_cmd_noise)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run one subcommand; data problems are one ``error:`` line on stderr and exit status 1."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(args.log_level)
    try:
        outs = args.func(args)
    except DataError as exc:
        print(f"error: {args.command}: {exc}", file=sys.stderr)
        return 1
    logger.info("%s done: %s", args.command, ", ".join(str(o) for o in outs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
