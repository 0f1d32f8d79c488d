"""Model bundles: one folder that is all inference needs (``softtok export`` writes it, ``softtok.load`` reads it).

    softtok.yaml        format; kind (asr | vocoder); per source the featurizer spec (checkpoint path and sha256;
                        the checkpoint itself stays outside), frame rate and codebook; the model files; the default
                        head, τ* and its scale with the dev sweep they came from; every file's sha256
    config.yaml         the training config (rebuilds the model)
    model.pth           the weights
    codebooks/<i>.npy   (+ .yaml) one per source, for token models
    tau_sweep.yaml      the dev sweep τ* came from (token models that had one)

A bundle is written beside its destination and renamed into place, so it exists whole or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from softtok.downstream.training import trained_codebooks
from softtok.tokenizers.fileio import load_yaml, save_yaml, sha256_of
from softtok.tokenizers.jobs import feature_spec_of
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.outdir import remove_stale_temps
from softtok.tokenizers.provenance import differences
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import SWEEP_FILE, load_sweep, sweep_choice

logger = logging.getLogger(__name__)

FORMAT = 1
SPEC_FILE = "softtok.yaml"


class BundleError(ValueError):
    """A bundle that cannot be used as it is (missing file, changed content, newer format)."""


def model_kind(config: Dict[str, Any]) -> str:
    """``vocoder`` for a vocoder experiment's config.yaml, else ``asr``."""
    return "vocoder" if config.get("vocoder") else "asr"


def featurizer_entry(feats_scp: str, trained: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The featurizer of one source as the bundle records it: name, layer, options, checkpoint (path, sha256);
    ``trained``: the spec the model's config recorded at training, which the feats.yaml must still give."""
    spec = dict(feature_spec_of(feats_scp))  # the feats.yaml less the dump's counts
    if not spec.get("feature"):
        raise BundleError(f"{feats_scp}: no feats.yaml beside it to say which features the model was trained on")
    if trained is not None and trained != spec:
        raise BundleError(f"{Path(feats_scp).with_name('feats.yaml')}: not the features the model was trained on "
                          f"({differences(trained, spec)}); were they dumped again since?")
    return spec_entry(spec, feats_scp)


def spec_entry(spec: Dict[str, Any], where: str) -> Dict[str, Any]:
    """A featurizer spec (``Featurizer.spec()``, a feats.yaml's) as the bundle records it; ``where`` for messages."""
    spec = dict(spec)
    checkpoint = spec.pop("checkpoint", None)
    entry = {"name": spec.pop("feature"), "dim": spec.pop("dim"), "frame_rate": spec.pop("frame_rate", None),
             "layer": spec.pop("layer", None), "options": spec, "checkpoint": None}
    if checkpoint:
        path = Path(checkpoint)
        if not path.exists():
            raise BundleError(f"featurizer checkpoint {checkpoint} (of {where}) not found")
        entry["checkpoint"] = {"path": str(path.resolve()), "name": path.name, "sha256": sha256_of(path)}
    return entry


def training_feats(exp: Path, feats_scp: str) -> str:
    """A training feats.scp a config names: as written (absolute, or relative to here), else relative to a folder
    above the experiment (recipes train from their own folder, e.g. ``dump/...`` beside ``exp/``)."""
    for base in [Path.cwd(), *exp.resolve().parents]:
        path = base / feats_scp
        if path.is_file():
            return str(path)
    raise BundleError(f"{exp / 'config.yaml'}: training features {feats_scp} not found (here or above {exp}); the "
                      "featurizer spec is read from their feats.yaml")


def export_bundle(exp_dir: str, out_dir: str, overwrite: bool = False) -> Dict[str, Any]:
    """Pack a trained ASR or vocoder experiment (config.yaml, model.pth, its codebooks, τ sweep) into ``out_dir``."""
    exp, out = Path(exp_dir), Path(out_dir)
    for name in ("config.yaml", "model.pth"):
        if not (exp / name).is_file():
            raise BundleError(f"{exp / name}: not found (is {exp} a trained experiment?)")
    if out.exists() and not overwrite:
        raise BundleError(f"{out}: already exists (give --overwrite to replace it)")
    config = load_yaml(exp / "config.yaml")
    trained = config.get("feature_specs") or [None] * len(split_list(config["train_feats"]))
    sources = [featurizer_entry(training_feats(exp, f), spec) for f, spec in zip(split_list(config["train_feats"]),
                                                                               trained)]
    codebooks = trained_codebooks(config, str(exp / "config.yaml")) if config.get("n_tokens") is not None else None
    head = default_head(exp, config)
    files = {name: exp / name for name in ("config.yaml", "model.pth")}
    if head.get("sweep"):
        files[SWEEP_FILE] = exp / SWEEP_FILE
    spec = {"kind": model_kind(config), "sources": sources, "model": {"config": "config.yaml", "weights": "model.pth",
            "trained_head": config.get("head")}, "head": head, "exported_from": str(exp.resolve())}
    return write_bundle(out, spec, files, codebooks)


def write_bundle(out: Path, spec: Dict[str, Any], files: Dict[str, Path],
                 codebooks: Optional[List[Codebook]] = None) -> Dict[str, Any]:
    """Write a bundle folder whole or not at all: ``files`` (bundle name → source file) copied, one codebook per
    source saved as ``codebooks/<i>.npy`` (and named in ``spec["sources"]``), every file's sha256 recorded."""
    remove_stale_temps(out.parent, prefix=f"{out.name}.tmp.")
    tmp = out.with_name(f"{out.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "codebooks").mkdir(parents=True)
    for name, source in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp / name)
    for i, codebook in enumerate(codebooks or []):
        codebook.save(tmp / "codebooks" / f"{i}.npy")
        spec["sources"][i]["codebook"] = f"codebooks/{i}.npy"
    digests = {str(p.relative_to(tmp)): sha256_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    spec = {"format": FORMAT, **spec, "files": digests}
    save_yaml(tmp / SPEC_FILE, spec)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"kind": spec["kind"], "sources": len(spec["sources"]), "head": spec["head"]["name"], "output": str(out)}


def default_head(exp: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """The head inference uses unless told otherwise: soft at the dev sweep's τ* for a token model that has one
    (hard where no τ beat hard on dev: ``--head soft`` then takes the sweep's best τ), else the training head."""
    if config.get("n_tokens") is None:
        return {"name": "continuous"}
    if not (exp / SWEEP_FILE).is_file():
        return {"name": config.get("head") or "hard", **({"tau": config["head_conf"]["tau"]}
                                                          if (config.get("head_conf") or {}).get("tau") else {})}
    sweep = load_sweep(exp)
    head = {"name": "soft", "tau": sweep["best"]["tau"], "factor": sweep["best"]["factor"],
            "scale": sweep["median_sqdist"], "sweep": SWEEP_FILE, "sweep_set": sweep.get("set")}
    if sweep_choice(sweep) is None:  # hard by default; --head soft still takes the sweep's best τ
        head.update(name="hard", note="no τ beat hard on dev")
    return head


@dataclass
class Bundle:
    """A bundle folder whose spec and files were checked."""

    path: Path
    spec: Dict[str, Any]

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def sources(self) -> List[Dict[str, Any]]:
        return self.spec["sources"]

    def file(self, name: str) -> Path:
        return self.path / name

    def codebooks(self) -> Optional[List[Codebook]]:
        """One codebook per source (None for a continuous-input model)."""
        names = [s.get("codebook") for s in self.sources]
        return [Codebook.load(self.file(n)) for n in names] if all(names) else None

    def checkpoint(self, source: int, override: Optional[str] = None) -> Optional[str]:
        """The featurizer checkpoint of a source: ``override`` or the recorded path, checked against its sha256."""
        entry = self.sources[source]["checkpoint"]
        if entry is None:
            return None
        path = Path(override or entry["path"])
        if not path.exists():
            raise BundleError(f"{self.path}: featurizer checkpoint {path} not found (the bundle records "
                              f"{entry['name']}, sha256 {entry['sha256'][:12]}…; pass its location)")
        if sha256_of(path) != entry["sha256"]:
            raise BundleError(f"{self.path}: featurizer checkpoint {path} differs from the one the model was trained "
                              f"on (sha256 {entry['sha256'][:12]}…)")
        return str(path)


def read_bundle(path: str | os.PathLike) -> Bundle:
    """A bundle folder, checked: spec present, format not newer than this softtok's, every file with its sha256."""
    root = Path(path)
    spec_path = root / SPEC_FILE
    if not spec_path.is_file():
        raise BundleError(f"{root}: not a softtok bundle (no {SPEC_FILE}; make one with softtok export)")
    spec = load_yaml(spec_path)
    if not isinstance(spec.get("format"), int) or spec["format"] > FORMAT:
        raise BundleError(f"{spec_path}: format {spec.get('format')!r} is newer than this softtok reads ({FORMAT}); "
                          "upgrade softtok")
    for name, digest in spec["files"].items():
        if not (root / name).is_file():
            raise BundleError(f"{root / name}: missing from the bundle")
        if sha256_of(root / name) != digest:
            raise BundleError(f"{root / name}: changed since export (sha256 differs)")
    return Bundle(root, spec)
