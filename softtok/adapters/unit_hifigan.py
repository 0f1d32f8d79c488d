"""Unit HiFi-GANs trained in other toolkits, run by espnet2's HiFi-GAN generator behind softtok's TokenEmbedding.

fairseq / speech-resynthesis ``CodeGenerator`` (:mod:`softtok.adapters.code_hifigan`) and ParallelWaveGAN's
``DiscreteSymbolHiFiGANGenerator`` (:mod:`softtok.adapters.pwg_hifigan`) are both a unit table (one row per
frame-rate unit) feeding a HiFi-GAN V1 generator. Each adapter names its checkpoint's keys in a :class:`KeyTable`
(its key → espnet2's); this module folds weight norm into plain weights, refuses any unknown, missing or
mis-shaped key in one line, builds ``espnet2.gan_tts.hifigan.HiFiGANGenerator`` with the source's upsampling
geometry, and writes / reads the bundle's ``generator.pth``. The unit rows become a
:class:`~softtok.downstream.embedding.TokenEmbedding`, so hard ids, p @ E and top-k are softtok's own maths.
"""

from __future__ import annotations

import argparse
import atexit
import math
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from softtok.adapters import AdapterError, Imported
from softtok.downstream.embedding import TokenEmbedding
from softtok.tokenizers.fileio import sha256_of
from softtok.tokenizers.heads import TokenInput
from softtok.tokenizers.kmeans import Codebook

GENERATOR_FILE = "generator.pth"
# the torch weight-norm layouts a checkpoint may hold: (magnitude g, direction v) suffixes
WEIGHT_NORM_SUFFIXES = (("weight_g", "weight_v"),
                        ("parametrizations.weight.original0", "parametrizations.weight.original1"))


class KeyTable:
    """A checkpoint's generator keys ↔ espnet2 ``HiFiGANGenerator`` keys, as template pairs: ``{i}``, ``{j}``,
    ``{n}`` stand for layer numbers, ``{p}`` for ``weight`` or ``bias`` (weight norm already folded)."""

    def __init__(self, fmt: str, pairs: Sequence[Tuple[str, str]]):
        self.fmt = fmt
        self.pairs = [(_template_regex(src), src, _template_regex(dst), dst) for src, dst in pairs]

    def target(self, key: str) -> Optional[str]:
        """espnet2's name of a checkpoint key, or None for a key this format does not have."""
        for src_re, _, _, dst in self.pairs:
            match = src_re.fullmatch(key)
            if match:
                return dst.format(**match.groupdict())
        return None

    def source(self, key: str) -> str:
        """The checkpoint key espnet2's ``key`` is read from."""
        for _, src, dst_re, _ in self.pairs:
            match = dst_re.fullmatch(key)
            if match:
                return src.format(**match.groupdict())
        return key


def _template_regex(template: str) -> "re.Pattern[str]":
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, …
    regex = "".join(re.escape(part) if k % 2 == 0 else
                    (f"(?P<{part}>weight|bias)" if part == "p" else f"(?P<{part}>\\d+)")
                    for k, part in enumerate(parts))
    return re.compile(regex)


# ----------------------------------------------------------------------------------------------- reading


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A torch checkpoint read as tensors and plain containers only: unpickling code from a file is refused."""
    file = Path(path)
    if not file.is_file():
        raise AdapterError(f"{path}: checkpoint not found")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AdapterError(f"{path}: holds objects other than tensors and plain containers, which softtok does not "
                           f"unpickle ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise AdapterError(f"{path}: not a torch checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise AdapterError(f"{path}: a {type(state).__name__}, expected a dict of state dicts")
    return state


def nested(state: Dict[str, Any], keys: Sequence[str], where: str) -> Dict[str, torch.Tensor]:
    """``state[k1][k2]…``: the generator's state dict inside a checkpoint; a missing level is one line naming it."""
    for depth, key in enumerate(keys):
        if not isinstance(state, dict) or key not in state:
            path = "".join(f"[{k!r}]" for k in keys[:depth + 1])
            raise AdapterError(f"{where}: no {path} (expected the generator's state dict there)")
        state = state[key]
    return state


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def fold_weight_norm(state: Dict[str, torch.Tensor], where: str) -> Dict[str, torch.Tensor]:
    """Weight-normed layers (g, v) as their plain ``weight`` = g · v / ‖v‖ (norm over all but dim 0, torch's
    default), as the toolkits' own ``remove_weight_norm`` leaves them; other keys unchanged."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
            if key.endswith(v_suffix):
                if key[:-len(v_suffix)] + g_suffix not in state:
                    raise AdapterError(f"{where}: missing key {key[:-len(v_suffix)] + g_suffix!r} (the pair of "
                                       f"{key!r})")
                break
            if key.endswith(g_suffix):
                base = key[:-len(g_suffix)]
                direction = state.get(base + v_suffix)
                if direction is None:
                    raise AdapterError(f"{where}: missing key {base + v_suffix!r} (the pair of {key!r})")
                if tuple(value.shape) != (direction.shape[0],) + (1,) * (direction.ndim - 1):
                    raise AdapterError(f"{where}: {key!r} of shape {tuple(value.shape)} is not a weight norm over "
                                       f"dim 0 of {tuple(direction.shape)}")
                out[base + "weight"] = torch._weight_norm(direction.float(), value.float(), 0)
                break
        else:
            out[key] = value
    return out


def map_keys(state: Dict[str, torch.Tensor], table: KeyTable, where: str) -> Dict[str, torch.Tensor]:
    """The state dict under espnet2's names; a key the table does not know is one line naming it."""
    mapped = {}
    for key, value in state.items():
        target = table.target(key)
        if target is None:
            raise AdapterError(f"{where}: unexpected key {key!r} for a {table.fmt} generator")
        mapped[target] = value
    return mapped


def check_keys(expected: Dict[str, torch.Tensor], mapped: Dict[str, torch.Tensor], table: KeyTable,
               where: str) -> None:
    """Every key the generator needs is there with its shape (named by the checkpoint's own key)."""
    for key, value in expected.items():
        if key not in mapped:
            raise AdapterError(f"{where}: missing key {table.source(key)!r} (the config's generator needs it)")
        if mapped[key].shape != value.shape:
            raise AdapterError(f"{where}: {table.source(key)!r} has shape {tuple(mapped[key].shape)}, the config's "
                               f"generator needs {tuple(value.shape)}")
    extra = sorted(set(mapped) - set(expected))
    if extra:
        raise AdapterError(f"{where}: key {table.source(extra[0])!r} has no layer in the config's generator")


# ----------------------------------------------------------------------------------------------- model


def build_generator(conf: Dict[str, Any]) -> nn.Module:
    """espnet2's HiFi-GAN generator (no weight norm: folded into the weights) with the source's upsampling layers.

    espnet2 builds upsampling stage i as ConvTranspose1d(kernel 2·u, padding ⌈u/2⌉, output_padding u mod 2); both
    source toolkits use kernel k and padding (k − u) // 2 (GSLM's k = 11 for u = 5). Where they differ the stage's
    transposed convolution is rebuilt as the source has it; everything else is espnet2's own layers.
    """
    from espnet2.gan_tts.hifigan import HiFiGANGenerator

    scales, kernels = list(conf["upsample_scales"]), list(conf["upsample_kernel_sizes"])
    generator = HiFiGANGenerator(**{**conf, "upsample_kernel_sizes": [2 * u for u in scales]}, out_channels=1,
                                 use_weight_norm=False)
    for stage, (u, k) in enumerate(zip(scales, kernels)):
        conv = generator.upsamples[stage][1]
        if (conv.kernel_size[0], conv.padding[0], conv.output_padding[0]) != (k, (k - u) // 2, 0):
            generator.upsamples[stage][1] = nn.ConvTranspose1d(conv.in_channels, conv.out_channels, k, u,
                                                               padding=(k - u) // 2, bias=conv.bias is not None)
    return generator


def check_geometry(conf: Dict[str, Any], where: str, names: Dict[str, str]) -> None:
    """One-line errors for what espnet2's generator would only assert on; ``names``: conf key → config key."""
    pairs = [("upsample_scales", "upsample_kernel_sizes"), ("resblock_kernel_sizes", "resblock_dilations")]
    for a, b in pairs:
        if len(conf[a]) != len(conf[b]):
            raise AdapterError(f"{where}: {names[a]} and {names[b]} differ in length ({conf[a]} vs {conf[b]})")
    for key in ("kernel_size", "resblock_kernel_sizes"):
        sizes = conf[key] if isinstance(conf[key], list) else [conf[key]]
        if any(k % 2 == 0 for k in sizes):
            raise AdapterError(f"{where}: {names.get(key, key)} = {conf[key]} must be odd")


class UnitVocoder(nn.Module):
    """Token input (B, T, …) → TokenEmbedding of the source's unit rows → espnet2 HiFi-GAN → wave (B, hop·T)."""

    def __init__(self, n_units: int, generator: Dict[str, Any]):
        super().__init__()
        self.embedding = TokenEmbedding(n_units, generator["in_channels"])
        self.generator = build_generator(generator)

    def forward(self, tokens: TokenInput) -> torch.Tensor:
        return self.generator(self.embedding(tokens).transpose(1, 2)).squeeze(1)


def load_renderer(root: Path, spec: Dict[str, Any], device: str) -> Tuple[Callable, Dict[str, Any]]:
    """(render(tokens, lengths) -> wave of a batch of one at the checkpoint's sample rate, its settings)."""
    model_spec = spec["model"]
    model = UnitVocoder(model_spec["n_units"], model_spec["generator"])
    model.load_state_dict(torch.load(Path(root) / GENERATOR_FILE, map_location="cpu", weights_only=True))
    model = model.to(device).eval()

    def render(tokens: TokenInput, lengths: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(tokens)[0]

    return render, {"sample_rate": int(model_spec["sample_rate"]), "format": model_spec["format"]}


# ----------------------------------------------------------------------------------------------- import


def add_common_args(group: argparse._ArgumentGroup) -> None:
    """The codebook and the duration-predictor opt-in both unit-vocoder formats take."""
    group.add_argument("--kmeans", required=True,
                       help="the k-means that made the vocoder's units: centroids (K, D) as .npy (a softtok "
                            "codebook, or np.save of a fitted k-means' cluster_centers_); unit k is row k of the "
                            "vocoder's unit table, K must equal its number of units")
    group.add_argument("--drop-duration-predictor", action="store_true",
                       help="accept a vocoder that also has a duration predictor: its generator was trained on "
                            "frame-rate units, the predictor only expands deduplicated ones, so it is left out")


def load_codebook(path: str) -> Codebook:
    try:
        return Codebook.load(path)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path}: not a k-means codebook ({_first_line(exc)})") from None


def unit_rows(table: torch.Tensor, codebook: Codebook, kmeans: str, offset: int, units_key: str,
              where: str) -> torch.Tensor:
    """Rows offset … offset + K − 1 of the unit table: unit k of the codebook is row offset + k."""
    n_units = table.shape[0] - offset
    if n_units != codebook.n_clusters:
        raise AdapterError(f"{where}: {units_key}={n_units} units but the codebook {kmeans} has "
                           f"K={codebook.n_clusters}")
    return table[offset:offset + codebook.n_clusters].float()


def convert_generator(state: Dict[str, torch.Tensor], table: KeyTable, conf: Dict[str, Any],
                      where: str) -> Dict[str, torch.Tensor]:
    """A checkpoint's generator weights (its own names, weight norm or not) as espnet2's generator holds them."""
    mapped = map_keys(fold_weight_norm(state, where), table, where)
    check_keys(build_generator(conf).state_dict(), mapped, table, where)
    return mapped


def imported(conf: Dict[str, Any], generator_state: Dict[str, torch.Tensor], rows: torch.Tensor,
             codebook: Codebook, sample_rate: int, originals: Dict[str, str], extra: Dict[str, Any],
             notes: List[str]) -> Imported:
    """What goes into the bundle: ``generator.pth`` (unit rows + espnet2 generator), a copy of the original config,
    the unit → row map; ``originals``: the checkpoint and config files (named with their sha256 in the spec)."""
    model = UnitVocoder(codebook.n_clusters, conf)
    with torch.no_grad():
        model.embedding.tables[0].weight.copy_(rows)
    model.generator.load_state_dict(generator_state)
    tmp = Path(tempfile.mkdtemp(prefix="softtok_import_"))
    atexit.register(shutil.rmtree, tmp, True)
    torch.save(model.state_dict(), tmp / GENERATOR_FILE)
    hop = math.prod(conf["upsample_scales"])
    spec = {"generator": conf, "n_units": codebook.n_clusters, "sample_rate": int(sample_rate), "hop": hop,
            "frame_rate": sample_rate / hop,
            "originals": {role: {"name": Path(p).name, "sha256": sha256_of(Path(p))} for role, p in originals.items()},
            **extra}
    config = Path(originals["config"])
    files = {GENERATOR_FILE: tmp / GENERATOR_FILE, f"original_{config.name}": config}
    return Imported(files=files, model=spec, codebooks=[codebook], notes=notes)
