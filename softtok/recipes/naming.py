"""Names and defaults the egs/ recipes share, so that run.sh only calls stages (``softtok recipe ...``).

    softtok recipe codebook --dir exp/kmeans --feature hubert --k 500 --layers 9 21   # one path per layer
    softtok recipe tokenizer-settings --tokenizer dmel --feature whisper --ks ''       # shell lines for eval
    softtok recipe relative-command -- /usr/bin/python -m softtok.cli prepare --out-dir /abs/data

Kept free of numpy and torch: egs/tools/stage.sh calls ``relative-command`` for every command it records.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence


@dataclass(frozen=True)
class TokenizerRules:
    """What a tokenizer fixes or defaults in a token recipe."""

    codebook_prefix: str = ""          # codebook file names start with it
    feature: Optional[str] = None      # the feature it bins (replaces the recipe's)
    ks: Optional[str] = None           # its default codebook sizes (also in smoke runs, whose ks are k-means')
    exp_dir: str = "exp"               # default folders of its models and of its results
    results_dir: str = "."


TOKENIZERS: Dict[str, TokenizerRules] = {
    "kmeans": TokenizerRules(),
    # dMel bins each of the 80 fbank log-mel channels: ks = bins per channel, 16 = 4 bits (softtok learn-dmel)
    "dmel": TokenizerRules(codebook_prefix="dmel_", feature="fbank", ks="16", exp_dir="exp_dmel",
                           results_dir="results_dmel"),
}


def tokenizer_rules(tokenizer: str) -> TokenizerRules:
    """The rules of a known tokenizer; any other name is a one-line error."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
    return TOKENIZERS[tokenizer]


def codebook_name(feature: str, k: int, tokenizer: str = "kmeans", layer: Optional[int] = None) -> str:
    """A recipe's codebook file name: ``[dmel_]<feature>[_l<layer>]_k<K>.npy``."""
    rules = tokenizer_rules(tokenizer)
    if layer is not None and rules.codebook_prefix:
        raise ValueError(f"tokenizer {tokenizer!r} takes no layers (one stream per layer needs kmeans)")
    return f"{rules.codebook_prefix}{feature}{'' if layer is None else f'_l{layer}'}_k{k}.npy"


def codebook_paths(folder: str, feature: str, k: int, tokenizer: str = "kmeans",
                   layers: Sequence[int] = ()) -> List[str]:
    """The codebook of size ``k`` in ``folder`` ('': the name alone), or one per SSL layer (one token stream each)."""
    names = [codebook_name(feature, k, tokenizer, layer) for layer in layers] if layers else \
        [codebook_name(feature, k, tokenizer)]
    return [os.path.join(folder, name) for name in names]


def tokenizer_settings(tokenizer: str, feature: str, ks: str, exp_dir: str, results_dir: str,
                       smoke: bool = False) -> Dict[str, str]:
    """A token recipe's feature, codebook sizes and folders under ``tokenizer``'s rules; given values otherwise."""
    rules = tokenizer_rules(tokenizer)
    if rules.ks is not None and (smoke or not ks):
        ks = rules.ks
    return {"feature": rules.feature or feature, "ks": ks, "exp_dir": exp_dir or rules.exp_dir,
            "results_dir": results_dir or rules.results_dir}


def relative_word(word: str, base: str = ".") -> str:
    """``word`` with each absolute path in it (the word itself, after ``--opt=``, items of a comma list) made
    relative to ``base``."""
    head, value = "", word
    if word.startswith("-") and "=" in word:
        head, value = word.split("=", 1)
        head += "="
    items = value.split(",")
    return head + ",".join(os.path.relpath(item, base) if os.path.isabs(item) else item for item in items)


def relative_command(words: Sequence[str], base: str = ".") -> str:
    """A command as a recipe's log records it, ready to paste into a shell: the program by its name, every absolute
    path relative to ``base`` (the recipe folder), so that logs and RESULTS.md hold no machine paths, and words
    with spaces or shell characters quoted (``--head-conf '{tau: 2}'``)."""
    if not words:
        return ""
    program = os.path.basename(words[0]) if os.path.isabs(words[0]) else words[0]
    return " ".join(shlex.quote(w) for w in [program, *(relative_word(w, base) for w in words[1:])])


def _shell_lines(values: Dict[str, str]) -> str:
    """``name=value`` lines, quoted for bash's ``eval``."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def _run(args: argparse.Namespace) -> str:
    """The text a subcommand prints."""
    if args.command == "codebook":
        return ",".join(codebook_paths(args.dir, args.feature, args.k, args.tokenizer, args.layers)) + "\n"
    if args.command == "tokenizer-settings":
        return _shell_lines(tokenizer_settings(args.tokenizer, args.feature, args.ks, args.exp_dir, args.results_dir,
                                               args.smoke == "true"))
    return relative_command(args.words, args.base) + "\n"


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Subcommands codebook, tokenizer-settings, relative-command."""
    parser = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.naming",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("codebook", help="codebook path(s): [dmel_]<feature>[_l<layer>]_k<K>.npy, a comma list",
                       description="The codebook path of size K, or one per layer (comma-separated).")
    p.add_argument("--dir", default="", help="the codebooks' folder (default: print the names alone)")
    p.add_argument("--feature", required=True)
    p.add_argument("--k", type=int, required=True, help="codebook size (dMel: bins per channel)")
    p.add_argument("--tokenizer", default="kmeans", help=" | ".join(TOKENIZERS))
    p.add_argument("--layers", type=int, nargs="*", default=[], help="SSL layers: one codebook each")
    p = sub.add_parser("tokenizer-settings", help="feature, ks, exp_dir, results_dir under a tokenizer (for eval)",
                       description="Print feature=, ks=, exp_dir=, results_dir= lines: the tokenizer's (dmel: fbank, "
                                   "16 bins, exp_dmel, results_dmel) where it fixes them or the value is empty.")
    p.add_argument("--tokenizer", required=True, help=" | ".join(TOKENIZERS))
    p.add_argument("--feature", default="")
    p.add_argument("--ks", default="", help="codebook sizes, space-separated ('': the tokenizer's default)")
    p.add_argument("--exp-dir", default="")
    p.add_argument("--results-dir", default="")
    p.add_argument("--smoke", choices=["true", "false"], default="false",
                   help="a smoke run: the tokenizer's ks replace the k-means sizes it set")
    p = sub.add_parser("relative-command", help="a command with its absolute paths relative to --base",
                       description="Print the words after -- joined by spaces, the program by its name and every "
                                   "absolute path (also after --opt= and in comma lists) relative to --base.")
    p.add_argument("--base", default=".", help="the recipe folder (default: the current one)")
    p.add_argument("words", nargs="*", help="-- COMMAND ARGS...")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Print what the subcommand asks for (exit 0), or one ``error:`` line (exit 1)."""
    args = build_parser(prog).parse_args(argv)
    try:
        sys.stdout.write(_run(args))
    except ValueError as exc:
        print(f"error: {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
