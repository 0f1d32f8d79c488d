"""A bundle of a recipe's ASR architecture with random weights: the inference cost of a model without training it.

Inference cost does not depend on weight values, so a model built from ``conf/train_cpu.yaml`` (as
``softtok.downstream.asr.train`` builds it) with random weights costs what the trained one would. The experiment
folder it writes (``config.yaml`` + ``model.pth``) is packed with ``softtok export`` itself, so the bundle is read by
``softtok.load`` like any other. Its default head is hard (there is no dev sweep to choose τ* from).

    python bench/random_bundle.py --train-conf egs/speechocean762/asr/conf/train_cpu.yaml \\
        --feats /tmp/bench_dump/whisper/train_sp/feats.scp --kmeans /tmp/bench_km1024.npy \\
        --text /tmp/bench_data/train_sp/text --out-dir /tmp/bench_bundles/asr_cpu_random_k1024
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from softtok.common import run_job, setup_logging
from softtok.downstream.asr.model import tokenizer_class
from softtok.downstream.asr.train import DEFAULTS, build_model
from softtok.downstream.scoring import normalize_text
from softtok.downstream.training import kmeans_entry, load_codebook, load_run_config
from softtok.inference.bundle import export_bundle
from softtok.tokenizers.datadir import read_kaldi_map
from softtok.tokenizers.fileio import save_yaml
from softtok.tokenizers.heads import build_head, input_sizes

logger = logging.getLogger("bench.random_bundle")


def random_bundle(train_conf: str, feats: str, kmeans: str, text: str, out_dir: str, seed: int = 0,
                  overwrite: bool = False) -> Dict[str, Any]:
    """Write a randomly initialised hard-token ASR experiment of ``train_conf`` and export it to ``out_dir``."""
    conf = load_run_config(train_conf, DEFAULTS, {})
    codebook = load_codebook(kmeans, feats)  # refused if made from other features
    texts = [normalize_text(t) for t in read_kaldi_map(Path(text)).values()]
    tokenizer = tokenizer_class(conf["token_type"]).from_texts(texts)
    n_tokens, feat_dim = input_sizes(build_head("hard", [codebook], [codebook.dim]), [codebook.dim])
    config = {**conf, "token_list": tokenizer.token_list, "head": "hard", "head_conf": {}, "tau_factor": None,
              "n_tokens": n_tokens, "feat_dim": feat_dim, "kmeans": kmeans_entry(kmeans),
              "train_feats": str(Path(feats).resolve()), "random_weights": True}
    torch.manual_seed(seed)
    model = build_model(config)
    with tempfile.TemporaryDirectory() as tmp:
        save_yaml(Path(tmp) / "config.yaml", config)
        torch.save(model.state_dict(), Path(tmp) / "model.pth")
        result = export_bundle(tmp, out_dir, overwrite)
    params = sum(p.numel() for p in model.parameters())
    return {**result, "parameters": params, "K": codebook.n_clusters, "vocab": len(tokenizer.token_list)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/random_bundle.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--train-conf", required=True, help="an ASR training config (e.g. conf/train_cpu.yaml)")
    p.add_argument("--feats", required=True, help="a feats.scp with its feats.yaml (the featurizer spec recorded)")
    p.add_argument("--kmeans", required=True, help="the codebook (.npy + .yaml) of the token input")
    p.add_argument("--text", required=True, help="Kaldi text: the output characters come from it")
    p.add_argument("--out-dir", required=True, help="the bundle folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_job("random-bundle", lambda: random_bundle(args.train_conf, args.feats, args.kmeans, args.text,
                                                          args.out_dir, args.seed, args.overwrite), logger)


if __name__ == "__main__":
    raise SystemExit(main())
