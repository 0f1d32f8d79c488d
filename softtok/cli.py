"""``softtok <verb>``: argument parsing and logging set-up only; the work lives in the package.

The data and token verbs (prepare ... dump-tokens, phone-text, align, analyze) are parsed here; the others
(``softtok asr|voc <verb>``, sets, voc-data, score, launch, recipe) run their module's ``main(argv, prog)``, the
module imported only then: the ``python -m softtok.<module>`` forms stay as aliases.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from softtok.common import int_at_least, run_job, setup_logging, yaml_mapping

logger = logging.getLogger("softtok")


def _add_dump_features(sub) -> None:
    p = sub.add_parser("dump-features", help="audio of a Kaldi data dir -> features ark/scp",
                       description="Compute features of every utterance of a data dir into "
                                   "OUT_DIR/feats.scp (+ feats.yaml), sharded and resumable.")
    p.add_argument("--data-dir", required=True, help="Kaldi data dir with wav.scp (+ segments)")
    p.add_argument("--feature", required=True, help="mfcc | fbank | hubert | wavlm | wav2vec2 | whisper")
    p.add_argument("--checkpoint", help="model checkpoint (fairseq .pt, HF dir, CTranslate2 dir)")
    p.add_argument("--layer", type=layer_list,
                   help="transformer layer (1-based) for SSL features; several (9,15,21,22): one feature folder "
                        "per layer, OUT_DIR with {layer} filled in, or OUT_DIR/layer<N>")
    p.add_argument("--feature-conf", type=yaml_mapping, default={}, help="extra featurizer options (YAML)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--nj", type=int, default=1, help="local parallel jobs (one process per shard)")
    p.add_argument("--shard", help="run only shard i/N (0-based), e.g. for array jobs")
    p.add_argument("--merge", type=int, metavar="N", help="only merge the N shards an array job wrote")
    p.add_argument("--batch-size", type=int_at_least(1), default=1, help="utterances per forward pass")
    p.add_argument("--device", help="cpu | cuda (default: cuda when present)")
    p.add_argument("--compress", action="store_true",
                   help="Kaldi two-byte compressed matrices (CM2): half the disk, 16-bit steps of each matrix's range")
    p.set_defaults(func=_run_dump_features)


def _run_dump_features(args) -> Dict:
    from softtok.tokenizers.dump_features import dump_features

    kwargs = dict(args.feature_conf)
    for key in ("checkpoint", "layer", "device"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    return dump_features(args.data_dir, args.feature, args.out_dir, nj=args.nj, shard=args.shard,
                         batch_size=args.batch_size, merge=args.merge, compress=args.compress, **kwargs)


def layer_list(text: str) -> List[int]:
    """argparse type for ``--layer 9`` or ``--layer 9,15,21,22``."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or a comma list like 9,15,21,22, got {text!r}") \
            from None


def _add_learn_kmeans(sub) -> None:
    p = sub.add_parser("learn-kmeans", help="features -> k-means codebook (.npy + .yaml)",
                       description="Learn K centroids from a feats.scp with faiss, sklearn or torch (GPU "
                                   "without faiss-gpu).")
    p.add_argument("--feats", required=True, help="feats.scp (feats.yaml beside it gives the spec)")
    p.add_argument("--n-clusters", type=int_at_least(1), required=True)
    p.add_argument("--backend", choices=["faiss", "sklearn", "torch"], default="faiss")
    p.add_argument("--portion", type=float, default=1.0, help="fraction of utterances to train on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kmeans-conf", type=yaml_mapping, default={},
                   help="backend options, e.g. '{niter: 50}' (faiss), '{n_init: 20}' (sklearn) or "
                        "'{device: cuda}' (torch)")
    p.add_argument("--out", required=True, help="output centroids .npy (a .yaml is written beside it)")
    p.set_defaults(func=_run_learn_kmeans)


def _run_learn_kmeans(args) -> Dict:
    from softtok.tokenizers.jobs import run_learn_kmeans

    return run_learn_kmeans(args.feats, args.n_clusters, args.backend, args.out, portion=args.portion,
                            seed=args.seed, **args.kmeans_conf)


def _add_learn_dmel(sub) -> None:
    p = sub.add_parser("learn-dmel", help="log-mel features -> dMel codebook (bins per channel, .npy + .yaml)",
                       description="dMel (Bai et al., 2024): each log-mel channel quantised to N_BINS values evenly "
                                   "spaced between the training data's min and max; one stream per channel.")
    p.add_argument("--feats", required=True, help="feats.scp of log-mel features (fbank)")
    p.add_argument("--n-bins", type=int_at_least(2), required=True, help="bins per channel (2^bits, e.g. 16)")
    p.add_argument("--per-channel-range", action="store_true", help="each channel's own min/max (default: global)")
    p.add_argument("--portion", type=float, default=1.0, help="fraction of utterances to take min/max over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output bin centres .npy (K, C) (a .yaml is written beside it)")
    p.set_defaults(func=_run_learn_dmel)


def _run_learn_dmel(args) -> Dict:
    from softtok.tokenizers.dmel import run_learn_dmel

    return run_learn_dmel(args.feats, args.n_bins, args.out, portion=args.portion, seed=args.seed,
                          per_channel_range=args.per_channel_range)


def _add_prepare(sub) -> None:
    from softtok.recipes.corpora import CORPORA, downloads_text

    p = sub.add_parser("prepare", help="corpus folder -> Kaldi data dirs",
                       description="Write Kaldi data dirs (absolute audio paths) for a corpus.",
                       epilog="corpora and where to get them:\n" + downloads_text(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=sorted(CORPORA))
    p.add_argument("--corpus-dir", required=True, help="the unpacked corpus folder")
    p.add_argument("--out-dir", required=True, help="data dirs are written to OUT_DIR/<split>")
    p.add_argument("--corpus-conf", type=yaml_mapping, default={},
                   help="options of the corpus's prepare function (softtok.recipes.corpora.<module>.prepare_<corpus>),"
                        " e.g. '{n_test: 100, n_dev: 100}' (ljspeech) or '{hours: 1.5, n_dev: 50}' (piper_joe)")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args) -> Dict:
    from softtok.recipes.corpora import prepare_corpus

    dirs = prepare_corpus(args.corpus, args.corpus_dir, args.out_dir, **args.corpus_conf)
    return {"splits": ",".join(dirs), "output": args.out_dir}


def _add_subset_data(sub) -> None:
    p = sub.add_parser("subset-data", help="copy N evenly spaced utterances of a data dir (or all of it)",
                       description="A smaller Kaldi data dir (for smoke runs and quick trials), or with --n 0 a copy "
                                   "of every file of the data dir as it is, replacing OUT.")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=0, help="utterances, evenly spaced (default 0: the whole dir, copied)")
    p.set_defaults(func=_run_subset_data)


def _run_subset_data(args) -> Dict:
    from softtok.tokenizers.datadir import copy_data_dir, evenly_spaced, load_data_dir, subset_data_dir

    if args.n < 0:
        raise ValueError(f"--n must be >= 0 (0: all utterances), got {args.n}")
    if args.n == 0:
        out = copy_data_dir(args.src, args.out)
    else:
        data = load_data_dir(args.src)
        out = subset_data_dir(data, args.out, evenly_spaced(data.utt_ids, args.n))
    return {"utts": len(load_data_dir(out)), "output": str(out)}


SUBCOMMANDS: List[Callable] = [_add_prepare, _add_subset_data, _add_dump_features, _add_learn_kmeans, _add_learn_dmel]

from softtok.analysis.cli import SUBCOMMANDS as _ANALYSIS  # noqa: E402  (phone-text, align, analyze)

SUBCOMMANDS += _ANALYSIS


@dataclass(frozen=True)
class Verb:
    """A verb whose work is ``main(argv, prog)`` of ``module``, imported only when the verb runs (so that
    ``softtok --help`` stays fast); with ``subcommand`` the module takes the verb's name as its own subcommand."""

    module: str
    help: str
    subcommand: bool = False


@dataclass(frozen=True)
class Choice:
    """A verb whose module an option picks (``softtok voc train --vocoder mel|hifigan``); the first is the default."""

    option: str
    verbs: Dict[str, Verb]
    text: str

    @property
    def help(self) -> str:
        """The one-line help, naming the option, its values and the default."""
        return f"{self.text} ({self.option} {'|'.join(self.verbs)}, default {next(iter(self.verbs))})"


ASR_VERBS: Dict[str, Verb | Choice] = {
    "train": Verb("softtok.downstream.asr.train", "train a token ASR model (hybrid CTC/attention) from a YAML config"),
    "decode": Verb("softtok.downstream.asr.decode", "decode a feats.scp with a trained model; score with --text"),
    "sweep-tau": Verb("softtok.recipes.asr", "decode dev over the τ grid; write tau_sweep.yaml", True),
    "decode-sets": Verb("softtok.recipes.asr", "decode sets: hard, soft(τ*), soft(auto τ) (or continuous)", True),
    "results": Verb("softtok.recipes.asr", "results.json, RESULTS.md and plots of a token-ASR experiment", True),
    "render": Verb("softtok.recipes.asr", "RESULTS.md again from its results.json (nothing is re-run)", True),
}
VOC_VERBS: Dict[str, Verb | Choice] = {
    "train": Choice("--vocoder", {
        "mel": Verb("softtok.downstream.vocoder.train", "train the mel vocoder"),
        "hifigan": Verb("softtok.downstream.vocoder.hifigan", "train the HiFi-GAN vocoder", True),
        "conformer_mel": Verb("softtok.downstream.vocoder.conformer_mel", "train the Conformer HiFi-GAN-mel model",
                              True)},
        "train (or resume) a unit vocoder from a YAML config"),
    "synthesize": Choice("--vocoder", {
        "mel": Verb("softtok.downstream.vocoder.mel", "synthesize with the mel vocoder + Griffin-Lim"),
        "hifigan": Verb("softtok.downstream.vocoder.hifigan", "synthesize with the HiFi-GAN vocoder", True),
        "conformer_mel": Verb("softtok.downstream.vocoder.conformer_mel",
                              "synthesize with the Conformer mel model + pretrained HiFi-GAN (22.05 kHz)", True)},
        "synthesize wavs with a trained unit vocoder"),
    "speaker-ref": Verb("softtok.recipes.voc.cli", "target speaker embedding (mean Resemblyzer d-vector)", True),
    "sweep-tau": Verb("softtok.recipes.voc.cli", "synthesise dev over the τ grid; write tau_sweep.yaml", True),
    "reference": Verb("softtok.recipes.voc.cli", "score natural audio and the oracles (natural mels to wave)", True),
    "synth-eval": Verb("softtok.recipes.voc.cli", "synthesise and score sets with hard and soft(τ*) (or continuous)", True),
    "results": Verb("softtok.recipes.voc.cli", "results.json, RESULTS.md, PNGs and listening samples", True),
    "render": Verb("softtok.recipes.voc.cli", "RESULTS.md again from its results.json (nothing is re-run)", True),
}
GROUPS: Dict[str, Tuple[str, Dict[str, Verb | Choice]]] = {
    "asr": ("token ASR: training, decoding, the τ sweep, decoding of sets, results", ASR_VERBS),
    "voc": ("unit vocoders: training, synthesis, the τ sweep, evaluation, results", VOC_VERBS),
}
MODULE_VERBS: Dict[str, Verb] = {
    "dump-tokens": Verb("softtok.tokenizers.jobs", "features + codebook -> hard ids or soft assignments (token files)"),
    "export": Verb("softtok.inference.cli", "pack a trained model into a bundle folder (all inference needs)", True),
    "transcribe": Verb("softtok.inference.cli", "text of audio files with an ASR bundle: hard, soft or continuous",
                       True),
    "resynthesize": Verb("softtok.inference.cli", "16 kHz speech of audio files with a vocoder bundle", True),
    "import-model": Verb("softtok.inference.imports", "a hard-token model of another toolkit (ESPnet, SpeechBrain, "
                         "unit HiFi-GAN) as a bundle, for soft inference"),
    "sets": Verb("softtok.recipes.sets", "derived data dirs: speaker/age/accent splits, speed perturbation, noise"),
    "voc-data": Verb("softtok.recipes.voc_data", "vocoder data: piper joe, conversion source, LJSpeech, TIMIT"),
    "score": Verb("softtok.downstream.scoring", "WER/CER of a hyp text, or a paired bootstrap of two score dirs"),
    "launch": Verb("softtok.recipes.launch", "a sharded dump as local processes or a Slurm array job"),
    "recipe": Verb("softtok.recipes.naming", "names and defaults the egs/ recipes share (codebook paths, ...)"),
}
TABLE_VERBS = {**{name: text for name, (text, _) in GROUPS.items()}, **{n: v.help for n, v in MODULE_VERBS.items()}}


def run_verb(verb: Verb, argv: List[str], prog: str) -> int:
    """Import the verb's module and run its ``main``; ``prog`` (``softtok asr train``) heads its usage."""
    module = importlib.import_module(verb.module)
    if verb.subcommand:  # the module's parser adds the subcommand's name after its own prog
        prog, name = prog.rsplit(" ", 1)
        argv = [name, *argv]
    return module.main(argv, prog=prog)


def pick(choice: Choice, argv: List[str], prog: str) -> Tuple[Verb, List[str]]:
    """The verb ``choice.option`` names in ``argv`` (anywhere; default the first), and ``argv`` without it."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument(choice.option, choices=list(choice.verbs), default=next(iter(choice.verbs)))
    known, rest = parser.parse_known_args(argv)
    name = getattr(known, choice.option.lstrip("-").replace("-", "_"))
    if "-h" in rest or "--help" in rest:
        print(f"{prog}: {choice.help}; the options with {choice.option} {name}:")
    return choice.verbs[name], rest


def group_parser(group: str) -> argparse.ArgumentParser:
    """``softtok <group>``'s parser: its verbs and their one-line help (what ``softtok <group> --help`` shows)."""
    text, verbs = GROUPS[group]
    parser = argparse.ArgumentParser(prog=f"softtok {group}", description=text)
    sub = parser.add_subparsers(dest="verb", required=True)
    for name, verb in verbs.items():
        sub.add_parser(name, help=verb.help, add_help=False)
    return parser


def run_table_verb(name: str, argv: List[str]) -> int:
    """Run ``softtok NAME ARGV``: a module verb, or a group's verb (``softtok asr train ...``)."""
    if name in MODULE_VERBS:
        return run_verb(MODULE_VERBS[name], argv, f"softtok {name}")
    verbs = GROUPS[name][1]
    if not argv or argv[0] not in verbs:
        group_parser(name).parse_args(argv[:1])  # prints the group's help or the error, and exits
    prog, entry, rest = f"softtok {name} {argv[0]}", verbs[argv[0]], argv[1:]
    if isinstance(entry, Choice):
        entry, rest = pick(entry, rest, prog)
    return run_verb(entry, rest, prog)


def build_parser() -> argparse.ArgumentParser:
    """``softtok``'s parser: the in-process verbs, and the table's verbs listed (their modules parse their options)."""
    parser = argparse.ArgumentParser(prog="softtok", description="Soft SSL speech tokens toolkit")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    for name, text in TABLE_VERBS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``softtok`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TABLE_VERBS:
        return run_table_verb(argv[0], argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in TABLE_VERBS:
        parser.error(f"put {args.command!r} first: `softtok {args.command} ...` takes its own options")
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(args.log_level)
    return run_job(args.command, lambda: args.func(args), logger)


if __name__ == "__main__":
    sys.exit(main())
