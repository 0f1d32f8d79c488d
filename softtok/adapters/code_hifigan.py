"""fairseq / speech-resynthesis CodeHiFiGAN unit vocoders (the HuBERT-unit HiFi-GANs of GSLM, textless-lib, S2UT).

    softtok import-model code_hifigan --generator g_00500000 --config config.json --kmeans km100.npy \\
        --feature hubert --checkpoint hubert_base_ls960.pt --layer 6 --out-dir bundles/gslm_vocoder

The checkpoint is the torch file those toolkits write, ``{"generator": state dict}`` of a ``CodeGenerator``: the
unit table ``dict.weight`` (num_embeddings × embedding_dim; unit k is row k) feeding a HiFi-GAN V1 generator
(``conv_pre``, ``ups.*``, ``resblocks.*``, ``conv_post``, weight-normed or not); the config is their JSON
(``upsample_rates``, ``upsample_kernel_sizes``, ``upsample_initial_channel``, ``resblock_kernel_sizes``,
``resblock_dilation_sizes``, ``num_embeddings``, ``embedding_dim``, ``model_in_dim``, ``sampling_rate``). Read
without fairseq: the weights go by key name into espnet2's HiFi-GAN generator, the unit table into softtok's
token embedding. Vocoders that also take F0 (``f0``, ``f0_quantizer_path``), a speaker (``multispkr``,
``embedder_params``) or VQ codes instead of a table (``lambda_commit_code``) are refused by that key; a duration
predictor (``dur_predictor_params``) only with ``--drop-duration-predictor``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from softtok.adapters import AdapterError, Imported
from softtok.adapters.unit_hifigan import (KeyTable, add_common_args, check_geometry, convert_generator, imported,
                                           load_codebook, load_renderer, nested, read_checkpoint, unit_rows)

KIND = "vocoder"
FORMAT = "fairseq CodeHiFiGAN"
TABLE_KEY = "dict.weight"
DURATION_KEYS = ("dur_predictor_params", "dur_prediction_weight")
# config key → why a vocoder with it set cannot take soft units alone
CONDITIONING = {
    "f0": "the generator also takes an F0 track",
    "f0_quantizer_path": "the generator also takes quantised F0",
    "lambda_commit": "the generator also takes F0 through a VQ-VAE",
    "multispkr": "the generator also takes a speaker embedding",
    "embedder_params": "the generator also takes a speaker d-vector",
    "lambda_commit_code": "the units come from a VQ-VAE code encoder, not a unit table",
}
REQUIRED = ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock_kernel_sizes",
            "resblock_dilation_sizes", "num_embeddings", "embedding_dim")
GENERATOR_NAMES = {"upsample_scales": "upsample_rates", "upsample_kernel_sizes": "upsample_kernel_sizes",
                   "resblock_kernel_sizes": "resblock_kernel_sizes", "resblock_dilations": "resblock_dilation_sizes"}
DEFAULT_SAMPLE_RATE = 16000  # GSLM's vocoders; a config without sampling_rate is taken as 16 kHz (noted)


def key_table(resblock: str) -> KeyTable:
    """CodeGenerator key → espnet2 HiFiGANGenerator key (ResBlock1: convs1 + convs2; ResBlock2: convs)."""
    blocks = ([("resblocks.{n}.convs1.{j}.{p}", "blocks.{n}.convs1.{j}.1.{p}"),
               ("resblocks.{n}.convs2.{j}.{p}", "blocks.{n}.convs2.{j}.1.{p}")] if resblock == "1" else
              [("resblocks.{n}.convs.{j}.{p}", "blocks.{n}.convs1.{j}.1.{p}")])
    return KeyTable(FORMAT, [("conv_pre.{p}", "input_conv.{p}"), ("ups.{i}.{p}", "upsamples.{i}.1.{p}"), *blocks,
                             ("conv_post.{p}", "output_conv.1.{p}")])


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the CodeHiFiGAN vocoder")
    g.add_argument("--generator", required=True, help="its checkpoint: the torch file holding {'generator': state "
                                                      "dict} (speech-resynthesis g_XXXXXXXX, a fairseq vocoder's "
                                                      "model.pt)")
    g.add_argument("--config", required=True, help="its JSON config (upsample_rates, num_embeddings, …)")
    add_common_args(g)


def read_config(path: str) -> Dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: a JSON {type(config).__name__}, expected an object")
    return config


def refuse_conditioning(config: Dict[str, Any], path: str, drop_duration: bool) -> List[str]:
    """One line naming the first config key that conditions the generator on more than units; the duration keys
    set (accepted with ``drop_duration``)."""
    for key, why in CONDITIONING.items():
        if config.get(key):
            raise AdapterError(f"{path}: {key} = {_short(config[key])}: {why}; softtok soft-decodes vocoders "
                               f"driven by units alone")
    duration = [key for key in DURATION_KEYS if config.get(key)]
    if duration and not drop_duration:
        raise AdapterError(f"{path}: {duration[0]} = {_short(config[duration[0]])}: the vocoder has a duration "
                           f"predictor (for deduplicated units); give --drop-duration-predictor to run its "
                           f"generator on frame-rate units without it")
    return duration


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def generator_conf(config: Dict[str, Any], path: str) -> Tuple[Dict[str, Any], str]:
    """espnet2 HiFiGANGenerator options of a CodeGenerator config, and its resblock type."""
    for key in REQUIRED:
        if key not in config:
            raise AdapterError(f"{path}: no {key!r} (a CodeHiFiGAN config has {', '.join(REQUIRED)})")
    resblock = str(config.get("resblock", "1"))
    if resblock not in ("1", "2"):
        raise AdapterError(f"{path}: resblock = {resblock!r}, expected '1' or '2'")
    in_dim = config.get("model_in_dim", config["embedding_dim"])
    if in_dim != config["embedding_dim"]:
        raise AdapterError(f"{path}: model_in_dim = {in_dim} but embedding_dim = {config['embedding_dim']}: the "
                           f"generator takes more than the unit embedding")
    conf = {"in_channels": config["embedding_dim"], "channels": config["upsample_initial_channel"], "kernel_size": 7,
            "upsample_scales": list(config["upsample_rates"]),
            "upsample_kernel_sizes": list(config["upsample_kernel_sizes"]),
            "resblock_kernel_sizes": list(config["resblock_kernel_sizes"]),
            "resblock_dilations": [list(d) for d in config["resblock_dilation_sizes"]],
            "use_additional_convs": resblock == "1", "bias": True, "nonlinear_activation": "LeakyReLU",
            "nonlinear_activation_params": {"negative_slope": 0.1}}
    check_geometry(conf, path, GENERATOR_NAMES)
    return conf, resblock


def collect(args: argparse.Namespace) -> Imported:
    """Check the config and checkpoint, map every generator key to espnet2's, take the unit rows."""
    config = read_config(args.config)
    dropped_keys = refuse_conditioning(config, args.config, args.drop_duration_predictor)
    conf, resblock = generator_conf(config, args.config)
    codebook = load_codebook(args.kmeans)
    state = dict(nested(read_checkpoint(args.generator), ["generator"], args.generator))
    if TABLE_KEY not in state:
        raise AdapterError(f"{args.generator}: missing key {TABLE_KEY!r} (the unit table)")
    table = state.pop(TABLE_KEY)
    if table.shape != (config["num_embeddings"], config["embedding_dim"]):
        raise AdapterError(f"{args.generator}: {TABLE_KEY!r} has shape {tuple(table.shape)}, the config says "
                           f"({config['num_embeddings']}, {config['embedding_dim']})")
    dropped = sorted(k for k in state if dropped_keys and k.startswith("dur_predictor."))
    for key in dropped:
        del state[key]
    rows = unit_rows(table, codebook, args.kmeans, 0, "num_embeddings", args.config)
    weights = convert_generator(state, key_table(resblock), conf, args.generator)
    sample_rate = config.get("sampling_rate", DEFAULT_SAMPLE_RATE)
    notes = [] if "sampling_rate" in config else [f"no sampling_rate in {Path(args.config).name}: "
                                                  f"{DEFAULT_SAMPLE_RATE} Hz assumed"]
    if dropped:
        notes.append(f"duration predictor left out ({len(dropped)} dur_predictor.* tensors): frame-rate units")
    extra = {"source": FORMAT, "unit_table": TABLE_KEY, "unit_offset": 0, "resblock": resblock,
             "duration_predictor": "left out" if dropped_keys else None}
    return imported(conf, weights, rows, codebook, sample_rate,
                    {"checkpoint": args.generator, "config": args.config}, extra, notes)


__all__ = ["KIND", "add_args", "collect", "load_renderer"]
