"""``softtok import-model FORMAT``: a hard-token model trained in another toolkit, packed as a softtok bundle.

    softtok import-model espnet_asr2 --exp-dir exp/asr_discrete --kmeans km.npy \\
        --feature hubert --checkpoint hubert_base_ls960.pt --layer 6 --out-dir bundles/espnet_hubert6

The adapter (:mod:`softtok.adapters`) reads and checks the model as its toolkit saved it; this module adds what
every bundle needs: the featurizer that made the model's tokens (``--feature`` … or a softtok dump's ``--feats``),
the codebook(s), the default head and, from ``--scale-feats``, the τ scale that ``--tau-factor`` multiplies.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from softtok.adapters import ADAPTERS, AdapterError, Imported, adapter
from softtok.common import run_job, setup_logging, yaml_mapping
from softtok.inference.bundle import BundleError, featurizer_entry, spec_entry, write_bundle
from softtok.tokenizers.features.base import build_featurizer
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import check_tau, median_nearest_sqdist, one_or_list

logger = logging.getLogger(__name__)


def featurizer_sources(args: argparse.Namespace, imported: Imported) -> List[Dict[str, Any]]:
    """One bundle source per codebook: from ``--feats`` (feats.yaml), else the ``--feature`` featurizer built once
    per layer the adapter names (its spec says what it is)."""
    if args.feats:
        sources = [featurizer_entry(f) for f in split_list(args.feats)]
    elif args.feature:
        layers = imported.layers or [args.layer]
        sources = [spec_entry(build_featurizer(args.feature, args.checkpoint, layer, "cpu", **args.feature_conf)
                              .spec(), f"--feature {args.feature}") for layer in layers]
    else:
        raise BundleError("say which features made the model's tokens: --feature NAME [--checkpoint --layer] or "
                          "--feats DUMP/feats.scp")
    if len(sources) != len(imported.codebooks):
        raise BundleError(f"{len(sources)} feature source(s) for {len(imported.codebooks)} codebook(s)")
    if imported.layers and [s["layer"] for s in sources] != imported.layers:
        raise BundleError(f"the features are of layers {[s['layer'] for s in sources]}, the model's tokens of layers "
                          f"{imported.layers}")
    for i, (source, codebook) in enumerate(zip(sources, imported.codebooks)):
        if source["dim"] != codebook.dim:
            raise BundleError(f"source {i + 1}: {source['name']} features are {source['dim']}-dim, the codebook's "
                              f"centroids {codebook.dim}-dim")
        rate = imported.model.get("frame_rate")
        if rate and source.get("frame_rate") and abs(source["frame_rate"] - rate) > 1e-6:
            raise BundleError(f"source {i + 1}: {source['name']} features are {source['frame_rate']:g} frames/s, the "
                              f"model takes {rate:g} units/s")
    return sources


def default_head(args: argparse.Namespace, imported: Imported) -> Dict[str, Any]:
    """Hard unless ``--tau`` is given; with ``--scale-feats`` the τ scale of each source is recorded."""
    head: Dict[str, Any] = {"name": "hard"} if args.tau is None else {"name": "soft", "tau": check_tau(args.tau)}
    if args.scale_feats:
        scps = split_list(args.scale_feats)
        if len(scps) != len(imported.codebooks):
            raise BundleError(f"--scale-feats gives {len(scps)} feats.scp for {len(imported.codebooks)} codebook(s)")
        head["scale"] = one_or_list([median_nearest_sqdist(cb, scp) for cb, scp in zip(imported.codebooks, scps)])
    return head


def import_model(args: argparse.Namespace) -> Dict[str, Any]:
    """Check the model with its adapter, then write the bundle (whole or not at all)."""
    out = Path(args.out_dir)
    if out.exists() and not args.overwrite:
        raise BundleError(f"{out}: already exists (give --overwrite to replace it)")
    module = adapter(args.format)
    imported = module.collect(args)
    spec = {"kind": module.KIND, "sources": featurizer_sources(args, imported),
            "model": {"format": args.format, "max_frames": imported.max_frames, **imported.model},
            "head": default_head(args, imported), "imported_from": args.format, "notes": imported.notes}
    return write_bundle(out, spec, imported.files, imported.codebooks)


def add_shared_args(p: argparse.ArgumentParser) -> None:
    """The options every format takes: the featurizer, the default head, the output."""
    feats = p.add_argument_group("the features the model's tokens were made from (one of)")
    feats.add_argument("--feature", help="a softtok featurizer name (hubert, wavlm, whisper, …)")
    feats.add_argument("--checkpoint", help="its checkpoint (recorded by path and sha256)")
    feats.add_argument("--layer", type=int, help="its layer")
    feats.add_argument("--feature-conf", type=yaml_mapping, default={}, help="its other options, YAML")
    feats.add_argument("--feats", help="or a softtok dump's feats.scp whose feats.yaml names them (comma list: one "
                                       "per codebook)")
    p.add_argument("--tau", type=float, help="make soft at this τ the bundle's default head (default: hard)")
    p.add_argument("--scale-feats", help="features (feats.scp, one per codebook) to record the τ scale from, so "
                                         "--tau-factor works")
    p.add_argument("--out-dir", required=True, help="the bundle folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Pack a hard-token model trained in another toolkit as a "
                                "softtok bundle, for soft inference without retraining (softtok transcribe / "
                                "resynthesize / softtok.load).")
    sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for name in ADAPTERS:
        module = adapter(name)
        f = sub.add_parser(name, help=module.__doc__.split("\n")[0], description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_args(f)
        add_shared_args(f)
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    return run_job("import-model", lambda: import_model(args), logger)


__all__ = ["AdapterError", "import_model", "main"]
