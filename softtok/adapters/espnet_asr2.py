"""ESPnet discrete-unit ASR (asr2 recipes: the MT task's ``discrete_asr`` model on frame-rate k-means units).

    softtok import-model espnet_asr2 --exp-dir exp/asr_train_discrete_asr_raw_wavlm_large_21_km2000_char_ts_en_char \\
        --kmeans exp/kmeans/wavlm_large_21_2000clusters/km_2000.mdl --allow-pickle \\
        --decode-config conf/decode_ctc0.3.yaml --feature wavlm --checkpoint WavLM-Large.pt --layer 21 --out-dir b/

The experiment is read as ESPnet saved it (``config.yaml`` with its inline token lists, the ``.pth``) and built by
ESPnet's own task (``MTTask``, through ``espnet2.bin.mt_inference.Text2Text``, the class the asr2 recipes decode
with). The asr2 recipes write cluster k into the source text as the character U+4E00 + k (``src_token_type: char``);
unit ids written as words (``src_token_type: word``, tokens ``0`` … ``K-1``) are read too. Each cluster maps to its
row of ``src_token_list`` (a cluster training never saw to ``<unk>``, as ESPnet's own text preprocessing does), and
only the frontend's embedding lookup is replaced by p @ E (:mod:`softtok.adapters.espnet_units`).

Refused, in one line naming the config key: BPE over units (``src_token_type: bpe``), deduplicated units
(``src_case rm``: the src_text file ``text.rm.*``), other models or frontends, a codebook whose K disagrees with the
token list or whose dim disagrees with the features, and ESPnet's pickled k-means model without ``--allow-pickle``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from softtok.adapters import AdapterError, Imported
from softtok.adapters.kmeans_files import read_kmeans
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.kmeans import Codebook

KIND = "asr"
CJK_BASE = 0x4E00  # asr2.sh stage 4b: cluster k is written as chr(0x4e00 + k)
UNIT_TOKEN_TYPES = ("char", "word")  # char: one CJK character per unit; word: the unit id as a word
DECODE_KEYS = ("beam_size", "ctc_weight", "penalty", "maxlenratio", "minlenratio", "nbest", "normalize_length")
PICKLE_SUFFIXES = (".mdl", ".pkl", ".joblib", ".pickle")


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the ESPnet experiment (asr2 recipe: espnet2.bin.mt_train)")
    g.add_argument("--exp-dir", required=True, help="the experiment folder (config.yaml and the .pth)")
    g.add_argument("--model-file", default="valid.acc.ave.pth",
                   help="the weights, in --exp-dir or a path (default: valid.acc.ave.pth, asr2.sh's choice)")
    g.add_argument("--kmeans", required=True,
                   help="the k-means model: a centroid .npy (K, D), or ESPnet's km_<K>.mdl (or its km dir), a joblib "
                        "pickle of sklearn's MiniBatchKMeans, read only with --allow-pickle")
    g.add_argument("--allow-pickle", action="store_true",
                   help="unpickle ESPnet's km_<K>.mdl (unpickling runs code from the file: only for files you trust)")
    g.add_argument("--decode-config", help="ESPnet's decoding config (conf/decode*.yaml: beam_size, ctc_weight, "
                                           "penalty, maxlenratio, minlenratio, nbest); default: mt_inference's")
    g.add_argument("--bpemodel", help="the target sentencepiece model where token_type is bpe (default: the config's "
                                      "bpemodel, relative to the recipe folder or here)")
    g.add_argument("--src-case", choices=["ts", "rm"],
                   help="whether the units kept every frame (ts) or were deduplicated (rm); default: from the "
                        "config's src_text file name (text.<case>.<lang>)")


def collect(args: argparse.Namespace) -> Imported:
    """Check the experiment and the k-means model; the bundle gets ESPnet's config and weights as they are."""
    exp = Path(args.exp_dir)
    config_path = exp / "config.yaml"
    if not config_path.is_file():
        raise AdapterError(f"{config_path}: not found (--exp-dir must be an ESPnet experiment folder)")
    config = load_yaml(config_path)
    check_model(config)
    check_src_case(config, args.src_case)
    src_tokens = token_list(config, "src_token_list")
    codebook = load_codebook(Path(args.kmeans), args.allow_pickle)
    rows, unseen = cluster_rows(src_tokens, config["src_token_type"], codebook.n_clusters)
    model_file = resolve_model_file(exp, args.model_file)
    check_table(model_file, config, len(src_tokens))
    decode, ignored = decode_settings(args.decode_config, config)
    files = {"config.yaml": config_path, "model.pth": model_file}
    bpemodel = target_bpemodel(config, exp, args.bpemodel)
    if bpemodel is not None:
        files["bpe.model"] = bpemodel
    notes = [f"ESPnet discrete_asr from {exp.resolve()} ({model_file.name}); k-means {args.kmeans}"]
    if unseen:
        notes.append(f"{unseen} of {codebook.n_clusters} clusters are not in src_token_list (training never saw "
                     f"them): they embed as <unk>, as ESPnet's preprocessing maps them")
    if ignored:
        notes.append(f"decode config keys not used (no LM or other scorer in the bundle): {', '.join(ignored)}")
    model = {"units": config["src_token_type"], "unit_rows": rows, "decode": decode,
             "bpemodel": "bpe.model" if bpemodel is not None else None}
    return Imported(files=files, model=model, codebooks=[codebook], notes=notes)


def check_model(config: Dict[str, Any]) -> None:
    """Refuse what is not one embedding row per frame-rate unit: other models and frontends, BPE over units."""
    model = config.get("model", "mt")
    if model != "discrete_asr":
        raise AdapterError(f"config.yaml: model: {model} (the asr2 recipes' discrete_asr is read)")
    frontend = config.get("frontend")
    if config.get("input_size") is not None or frontend != "embed":
        raise AdapterError(f"config.yaml: frontend: {frontend} (input_size: {config.get('input_size')}); the units "
                           f"must go through the embed frontend, one table row per unit")
    token_type = config.get("src_token_type")
    if token_type == "bpe":
        raise AdapterError("config.yaml: src_token_type: bpe (BPE pieces over units: Σ_k p_k E_k is undefined for a "
                           "piece; retrain with src_token_type char)")
    if token_type not in UNIT_TOKEN_TYPES:
        raise AdapterError(f"config.yaml: src_token_type: {token_type} (units are read as "
                           f"{' or '.join(UNIT_TOKEN_TYPES)})")


def check_src_case(config: Dict[str, Any], given: Optional[str]) -> None:
    """Refuse deduplicated units (asr2.sh ``src_case rm``), read from the src_text file name unless given."""
    path = next((str(entry[0]) for entry in config.get("train_data_path_and_name_and_type") or []
                 if len(entry) > 1 and entry[1] == "src_text"), None)
    match = re.match(r"text\.(ts|rm)\.", Path(path).name) if path else None
    case = given or (match.group(1) if match else None)
    if case == "rm":
        where = "--src-case rm" if given else f"config.yaml: train_data_path_and_name_and_type src_text: {path}"
        raise AdapterError(f"{where}: src_case rm (deduplicated units: a run of frames is one token, so frame-level "
                           f"p(k|x) has no token to weight; retrain with src_case ts)")
    if case is None:
        raise AdapterError(f"config.yaml: train_data_path_and_name_and_type src_text: {path} does not say whether "
                           f"units kept every frame; give --src-case ts if they did")


def token_list(config: Dict[str, Any], key: str) -> List[str]:
    """A token list as ESPnet's training writes it into config.yaml: inline."""
    tokens = config.get(key)
    if not isinstance(tokens, list) or not tokens:
        raise AdapterError(f"config.yaml: {key} is {type(tokens).__name__}, not the inline list ESPnet's training "
                           f"writes (a config.yaml written by espnet2.bin.mt_train is needed)")
    return [str(t) for t in tokens]


def unit_of(token: str, token_type: str) -> Optional[int]:
    """The cluster a source token stands for: U+4E00 + k (char, the recipes' mapping) or the id as a word; else None."""
    if token_type == "char":
        return ord(token) - CJK_BASE if len(token) == 1 and ord(token) >= CJK_BASE else None
    return int(token) if token.isdigit() else None


def cluster_rows(tokens: List[str], token_type: str, n_clusters: int) -> Tuple[List[int], int]:
    """Row of ``src_token_list`` for each cluster (``<unk>``'s for a cluster the list lacks) and how many lack one."""
    rows: Dict[int, int] = {}
    for row, token in enumerate(tokens):
        if token.startswith("<") and token.endswith(">"):  # <blank>, <unk>, <sos/eos>
            continue
        k = unit_of(token, token_type)
        if k is None:
            raise AdapterError(f"config.yaml: src_token_list row {row} is {token!r}, not a unit token "
                               f"(src_token_type: {token_type})")
        if k >= n_clusters:
            raise AdapterError(f"config.yaml: src_token_list has unit {k} (token {token!r}) but the codebook has "
                               f"K={n_clusters} clusters")
        rows[k] = row
    unseen = [k for k in range(n_clusters) if k not in rows]
    if not rows or (unseen and "<unk>" not in tokens):
        raise AdapterError(f"config.yaml: src_token_list lacks {len(unseen)} of the codebook's K={n_clusters} units "
                           f"and has no <unk> to map them to")
    unk = tokens.index("<unk>") if unseen else -1
    return [rows.get(k, unk) for k in range(n_clusters)], len(unseen)


def load_codebook(path: Path, allow_pickle: bool) -> Codebook:
    """A centroid .npy, or the centres of ESPnet's pickled MiniBatchKMeans (only with ``allow_pickle``)."""
    if path.is_dir():
        found = sorted(path.glob("km_*.mdl"))
        if len(found) != 1:
            raise AdapterError(f"{path}: expected one km_<K>.mdl in the km dir, found {len(found)}")
        path = found[0]
    return read_kmeans(path, allow_pickle, PICKLE_SUFFIXES, "ESPnet's km_<K>.mdl")


def resolve_model_file(exp: Path, name: str) -> Path:
    """The weights file: a name in the experiment folder, or a path (links followed)."""
    path = exp / name if (exp / name).is_file() else Path(name)
    if not path.is_file():
        present = sorted(p.name for p in exp.glob("*.pth"))
        raise AdapterError(f"{path}: not found (--model-file; {exp} has {present})")
    return path.resolve()


def check_table(model_file: Path, config: Dict[str, Any], n_tokens: int) -> None:
    """The frontend's embedding table has a row per source token (the weights fit the config)."""
    import torch

    state = torch.load(model_file, map_location="cpu", weights_only=True)
    key = "frontend.embed.0.weight"
    if key not in state:
        raise AdapterError(f"{model_file}: no {key} (not the weights of an embed frontend)")
    if state[key].shape[0] != n_tokens:
        raise AdapterError(f"{model_file}: {key} has {state[key].shape[0]} rows, config.yaml src_token_list "
                           f"{n_tokens} tokens")


def decode_settings(path: Optional[str], config: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """Text2Text's search options: ESPnet's decoding config over mt_inference's defaults; the keys not used."""
    from espnet2.bin.mt_inference import get_parser

    parser = get_parser()
    settings = {key: parser.get_default(key) for key in DECODE_KEYS}
    given = load_yaml(path) if path else {}
    settings.update({k: type(settings[k])(v) for k, v in given.items() if k in DECODE_KEYS})
    if settings["ctc_weight"] and not (config.get("model_conf") or {}).get("ctc_weight", 0.5):
        raise AdapterError(f"{path}: ctc_weight: {settings['ctc_weight']} but the model has no CTC "
                           f"(config.yaml model_conf.ctc_weight: 0)")
    return settings, sorted(k for k in given if k not in DECODE_KEYS)


def target_bpemodel(config: Dict[str, Any], exp: Path, given: Optional[str]) -> Optional[Path]:
    """The target sentencepiece model where ``token_type: bpe``: given, or the config's path from the recipe folder
    (two levels above the experiment) or from here."""
    if config.get("token_type") != "bpe":
        return None
    name = given or config.get("bpemodel")
    candidates = [Path(given)] if given else [Path(name), exp.resolve().parents[1] / name] if name else []
    for path in candidates:
        if path.is_file():
            return path
    raise AdapterError(f"config.yaml: token_type: bpe with bpemodel: {name} not found (from {exp.resolve().parents[1]} "
                       f"or here); give --bpemodel")


def load_decoder(root: Path, spec: Dict[str, Any], head: Any, search: str, device: str) -> Any:
    """ESPnet's Text2Text on this bundle, its frontend fed the head's TokenInput."""
    from softtok.adapters.espnet_units import ESPnetUnitDecoder

    return ESPnetUnitDecoder(Path(root), spec["model"], head, search, device)
