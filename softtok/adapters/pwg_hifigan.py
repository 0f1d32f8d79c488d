"""ParallelWaveGAN discrete-symbol HiFi-GAN unit vocoders (the unit vocoders of ESPnet's tts2 recipes).

    softtok import-model pwg_hifigan --generator exp/train_hubert/checkpoint-400000steps.pkl \\
        --config exp/train_hubert/config.yml --kmeans km100.npy --speaker 0 \\
        --feature hubert --checkpoint hubert_base_ls960.pt --layer 6 --out-dir bundles/pwg_vocoder

The checkpoint is what ``parallel-wavegan-train`` writes, ``checkpoint-<N>steps.pkl``: a torch file
``{"model": {"generator": …, "discriminator": …}, "optimizer": …, "steps": …}``, the generator a
``DiscreteSymbolHiFiGANGenerator`` whose unit table ``emb.weight`` (num_embs × in_channels; unit k is row k, no id
reserved) feeds a HiFi-GAN V1 generator (``input_conv``, ``upsamples.*``, ``blocks.*``, ``output_conv``); the
config is the ``config.yml`` beside it (``generator_type``, ``generator_params``, ``sampling_rate``). Read without
parallel_wavegan: the weights go by key name into espnet2's HiFi-GAN generator, the unit table into softtok's token
embedding; the wave comes out at the config's ``sampling_rate``. A multi-speaker vocoder (``num_spk_embs`` > 0)
needs ``--speaker ID``: its speaker embedding is added to every unit row, as the generator adds it; a concatenated
one (``concat_spk_emb``) and multi-band output (``out_channels`` > 1) are refused; a
``DiscreteSymbolDurationGenerator`` only with ``--drop-duration-predictor``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import yaml

from softtok.adapters import AdapterError, Imported
from softtok.adapters.unit_hifigan import (KeyTable, add_common_args, check_geometry, convert_generator, imported,
                                           load_codebook, load_renderer, nested, read_checkpoint, unit_rows)

KIND = "vocoder"
FORMAT = "ParallelWaveGAN DiscreteSymbolHiFiGANGenerator"
PLAIN, DURATION = "DiscreteSymbolHiFiGANGenerator", "DiscreteSymbolDurationGenerator"
TABLE_KEY, SPEAKER_KEY = "emb.weight", "spk_emb.weight"
# DiscreteSymbolHiFiGANGenerator's own defaults (parallel_wavegan 0.5-0.6): what a config.yml leaves out
DEFAULTS: Dict[str, Any] = {
    "in_channels": 512, "out_channels": 1, "channels": 512, "num_embs": 100, "num_spk_embs": 128,
    "spk_emb_dim": 128, "concat_spk_emb": False, "kernel_size": 7, "upsample_scales": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4], "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_additional_convs": True, "bias": True,
    "nonlinear_activation": "LeakyReLU", "nonlinear_activation_params": {"negative_slope": 0.1},
    "use_weight_norm": True,
}
DURATION_PARAMS = ("duration_layers", "duration_chans", "duration_kernel_size", "duration_offset",
                   "duration_dropout_rate")
ESPNET_OPTIONS = ("in_channels", "channels", "kernel_size", "upsample_scales", "upsample_kernel_sizes",
                  "resblock_kernel_sizes", "resblock_dilations", "use_additional_convs", "bias",
                  "nonlinear_activation", "nonlinear_activation_params")
KEYS = KeyTable(FORMAT, [(key, key) for key in ("input_conv.{p}", "upsamples.{i}.1.{p}",
                                                "blocks.{n}.convs1.{j}.1.{p}", "blocks.{n}.convs2.{j}.1.{p}",
                                                "output_conv.1.{p}")])


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the ParallelWaveGAN discrete-symbol HiFi-GAN")
    g.add_argument("--generator", required=True, help="its checkpoint-<N>steps.pkl")
    g.add_argument("--config", help="its config.yml (default: the one beside the checkpoint)")
    g.add_argument("--speaker", type=int, help="a multi-speaker vocoder's speaker id (0 … num_spk_embs − 1)")
    add_common_args(g)


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML that also reads the ``!!python/tuple`` a config dumped by PyYAML may hold (as a list)."""


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def read_config(path: str) -> Dict[str, Any]:
    try:
        config = yaml.load(Path(path).read_text(), Loader=_ConfigLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise AdapterError(f"{path}: not a readable config.yml ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a mapping, got {type(config).__name__}")
    return config


def generator_params(config: Dict[str, Any], path: str, drop_duration: bool) -> Dict[str, Any]:
    """The generator's options (its defaults filled in), every refusal one line naming the config key."""
    kind = config.get("generator_type", "ParallelWaveGANGenerator")
    if kind == DURATION and not drop_duration:
        raise AdapterError(f"{path}: generator_type = {kind}: the vocoder has a duration predictor (for deduplicated "
                           f"units); give --drop-duration-predictor to run its generator on frame-rate units")
    if kind not in (PLAIN, DURATION):
        raise AdapterError(f"{path}: generator_type = {kind}, not a discrete-symbol HiFi-GAN ({PLAIN})")
    given = {k.replace("upsample_kernal_sizes", "upsample_kernel_sizes"): v  # parallel_wavegan's own typo fix
             for k, v in (config.get("generator_params") or {}).items()}
    allowed = set(DEFAULTS) | (set(DURATION_PARAMS) if kind == DURATION else set())
    for key in given:
        if key not in allowed:
            raise AdapterError(f"{path}: generator_params.{key} is not an option of {kind} softtok knows")
    params = {**DEFAULTS, **given, "generator_type": kind}
    if params["out_channels"] != 1:
        raise AdapterError(f"{path}: generator_params.out_channels = {params['out_channels']}: multi-band output "
                           f"(PQMF) is not supported")
    if params["num_spk_embs"] > 0 and params["concat_spk_emb"]:
        raise AdapterError(f"{path}: generator_params.concat_spk_emb = true: the speaker embedding is concatenated "
                           f"to the units; softtok supports the added one (concat_spk_emb: false)")
    if "sampling_rate" not in config:
        raise AdapterError(f"{path}: no sampling_rate")
    return params


def speaker_vector(state: Dict[str, torch.Tensor], params: Dict[str, Any], speaker: Optional[int], path: str,
                   checkpoint: str) -> Optional[torch.Tensor]:
    """The added speaker embedding of ``--speaker`` (None for a single-speaker vocoder)."""
    n = params["num_spk_embs"]
    if n <= 0:
        if speaker is not None:
            raise AdapterError(f"{path}: generator_params.num_spk_embs = {n}: a single-speaker vocoder takes no "
                               f"--speaker")
        return None
    if speaker is None or not 0 <= speaker < n:
        raise AdapterError(f"{path}: generator_params.num_spk_embs = {n}: a multi-speaker vocoder; give --speaker "
                           f"ID in 0 … {n - 1}")
    if SPEAKER_KEY not in state:
        raise AdapterError(f"{checkpoint}: missing key {SPEAKER_KEY!r} (the speaker table)")
    return state.pop(SPEAKER_KEY)[speaker].float()


def collect(args: argparse.Namespace) -> Imported:
    """Check config.yml and the checkpoint, map every generator key to espnet2's, take the unit rows."""
    config_path = args.config or str(Path(args.generator).with_name("config.yml"))
    config = read_config(config_path)
    params = generator_params(config, config_path, args.drop_duration_predictor)
    conf = {key: params[key] for key in ESPNET_OPTIONS}
    check_geometry(conf, config_path, {k: f"generator_params.{k}" for k in conf})
    codebook = load_codebook(args.kmeans)
    state = dict(nested(read_checkpoint(args.generator), ["model", "generator"], args.generator))
    if TABLE_KEY not in state:
        raise AdapterError(f"{args.generator}: missing key {TABLE_KEY!r} (the unit table)")
    table = state.pop(TABLE_KEY)
    speaker = speaker_vector(state, params, args.speaker, config_path, args.generator)
    duration = params["generator_type"] == DURATION
    dropped = sorted(k for k in state if duration and k.startswith("duration_predictor."))
    for key in dropped:
        del state[key]
    # the duration generator's table has one more row, its padding id num_embs (parallel_wavegan's collater pads
    # with it): units are still rows 0 … K − 1
    padding_rows = 1 if duration else 0
    rows = unit_rows(table[:table.shape[0] - padding_rows], codebook, args.kmeans, 0, "generator_params.num_embs",
                     config_path)
    if speaker is not None:
        rows = rows + speaker
    weights = convert_generator(state, KEYS, conf, args.generator)
    notes = [f"speaker {args.speaker} of {params['num_spk_embs']} added to every unit row"] if speaker is not None \
        else []
    if dropped:
        notes.append(f"duration predictor left out ({len(dropped)} duration_predictor.* tensors): frame-rate units")
    extra = {"source": FORMAT, "unit_table": TABLE_KEY, "unit_offset": 0, "speaker": args.speaker,
             "generator_type": params["generator_type"]}
    return imported(conf, weights, rows, codebook, int(config["sampling_rate"]),
                    {"checkpoint": args.generator, "config": config_path}, extra, notes)


__all__ = ["KIND", "add_args", "collect", "load_renderer"]
