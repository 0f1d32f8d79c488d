"""Checkpoints of self-supervised speech encoders (HuBERT, WavLM, wav2vec 2.0) into torchaudio's model.

A checkpoint loads into torchaudio's ``Wav2Vec2Model`` with neither fairseq nor transformers:

* a fairseq ``.pt`` file (``cfg`` or legacy ``args`` + ``model`` state dict; pre-trained or
  CTC fine-tuned) or a microsoft/unilm WavLM ``.pt`` file (flat ``cfg`` + ``model``);
* a Hugging Face model dir (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

Whether the featurizer (:mod:`.ssl`) normalises the waveform to zero mean and unit variance (fairseq's
``F.layer_norm(wav, wav.shape)``) is read from the checkpoint: fairseq ``task.normalize`` (unilm:
``cfg.normalize``); HF ``do_normalize`` from ``preprocessor_config.json``, or without that file, when the conv
extractor uses layer norm (as every released layer-norm-extractor model, e.g. wav2vec2-large-lv60, was trained).
"""

from __future__ import annotations

import argparse
import ast
import enum
import json
import logging
import pickle
import re
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torchaudio.models import Wav2Vec2Model, wav2vec2_model, wavlm_model

from softtok.tokenizers.fileio import load_torch

logger = logging.getLogger(__name__)

FAIRSEQ_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"
_POS = "encoder.transformer.pos_conv_embed.conv."
_PROJ = "encoder.feature_projection."
_LAYER = "encoder.transformer.layers.{}."


@dataclass
class SSLModel:
    """A loaded encoder plus what the featurizer needs to know about its checkpoint."""

    model: Wav2Vec2Model
    kind: Optional[str]  # hubert | wavlm | wav2vec2; None when a legacy checkpoint does not say
    arch: Dict[str, Any]
    normalize: bool


# ---------------------------------------------------------------- pickled checkpoints


class _Stub:
    """Stand-in for a class of a package we lack (fairseq, omegaconf) inside a pickled checkpoint."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.__dict__.update(kwargs, _args=args)

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _LenientUnpickler(pickle.Unpickler):
    """Unpickler that replaces unimportable classes with :class:`_Stub` subclasses."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": module})


_LENIENT_PICKLE = types.ModuleType("softtok_lenient_pickle")
_LENIENT_PICKLE.Unpickler = _LenientUnpickler
_LENIENT_PICKLE.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _is_torch_file(path: Path) -> bool:
    """A torch.save zip archive, or a legacy (< 1.6) one, which opens with a pickle protocol byte."""
    with open(path, "rb") as f:
        first = f.read(1)
    return first == b"\x80" or zipfile.is_zipfile(path)


def load_checkpoint_file(path: Path) -> Any:
    """``torch.load`` a ``.pt`` file: tensors-only first, then fully (fairseq pickles Namespaces etc.)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises several types for non-checkpoints)
        if "Weights only load failed" not in str(exc) or not _is_torch_file(path):
            raise ValueError(f"{path}: not a PyTorch checkpoint ({_first_line(exc)})") from None
    logger.warning("%s: pickles more than tensors (as fairseq checkpoints do); unpickling it fully, "
                   "so only use checkpoints you trust", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_LENIENT_PICKLE)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: cannot unpickle this checkpoint ({_first_line(exc)})") from None


def _plain(obj: Any) -> Any:
    """Config objects (Namespace, omegaconf, stubbed omegaconf, enums) as plain dicts and lists."""
    if isinstance(obj, argparse.Namespace):
        return _plain(vars(obj))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.name
    if type(obj).__module__.split(".")[0] == "omegaconf" and not isinstance(obj, _Stub):
        from omegaconf import OmegaConf

        try:
            return _plain(OmegaConf.to_container(obj, resolve=True, enum_to_str=True))
        except Exception:  # noqa: BLE001  (unresolvable interpolations)
            return _plain(OmegaConf.to_container(obj, resolve=False, enum_to_str=True))
    if isinstance(obj, _Stub):
        state = obj.__dict__
        for key in ("_content", "_val", "_value_", "_state"):
            if key in state:
                return _plain(state[key])
        if len(state.get("_args", ())) == 1:  # e.g. an enum member pickled as EnumClass(value)
            return _plain(state["_args"][0])
        return {k: _plain(v) for k, v in state.items() if not k.startswith("_")}
    return obj


# ---------------------------------------------------------------- architecture


def _safe_eval(node: ast.AST) -> Any:
    """Evaluate literals, lists, tuples, ``+`` and ``*`` only."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_safe_eval(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _safe_eval(node.left), _safe_eval(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported expression {ast.dump(node)}")


def parse_conv_layers(spec: Any) -> List[Tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` ("[(512, 10, 5)] + [(512, 3, 2)] * 4 ...") without eval()."""
    value = _safe_eval(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else spec
    layers = [tuple(int(v) for v in layer) for layer in value]
    if not layers or any(len(layer) != 3 for layer in layers):
        raise ValueError(f"conv_feature_layers {spec!r}: expected [(dim, kernel, stride), ...]")
    return layers  # type: ignore[return-value]


def _build(arch: Dict[str, Any], wavlm: bool) -> Wav2Vec2Model:
    """An untrained torchaudio model of ``arch`` (dropouts off: we only run inference)."""
    kwargs = dict(
        extractor_mode=arch["extractor_mode"], extractor_conv_layer_config=arch["conv_layers"],
        extractor_conv_bias=arch["conv_bias"], encoder_embed_dim=arch["dim"], encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=arch["pos_kernel"], encoder_pos_conv_groups=arch["pos_groups"],
        encoder_num_layers=arch["num_layers"], encoder_num_heads=arch["num_heads"],
        encoder_attention_dropout=0.0, encoder_ff_interm_features=arch["ffn_dim"], encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0, encoder_layer_norm_first=arch["layer_norm_first"], encoder_layer_drop=0.0,
        aux_num_out=None)
    if wavlm:
        return wavlm_model(**kwargs, encoder_num_buckets=arch["num_buckets"], encoder_max_distance=arch["max_distance"])
    return wav2vec2_model(**kwargs)


def _finish_state(state: Dict[str, torch.Tensor], arch: Dict[str, Any], wavlm: bool,
                  model: Wav2Vec2Model) -> Dict[str, torch.Tensor]:
    """Fill in what torchaudio keeps differently: weight norm, absent projection / LN, fused WavLM q/k/v."""
    if _POS + "weight" in state:  # a pos_conv saved without weight norm: g = ||w|| over dims 0, 1
        w = state.pop(_POS + "weight")
        state[_POS + "parametrizations.weight.original0"] = w.norm(dim=(0, 1), keepdim=True)
        state[_POS + "parametrizations.weight.original1"] = w
    if _PROJ + "projection.weight" not in state and arch["conv_layers"][-1][0] == arch["dim"]:
        state[_PROJ + "projection.weight"] = torch.eye(arch["dim"])  # fairseq: no post_extract_proj when dims match
        state[_PROJ + "projection.bias"] = torch.zeros(arch["dim"])
    if _PROJ + "layer_norm.weight" not in state and _PROJ + "layer_norm.bias" not in state:
        model.encoder.feature_projection.layer_norm = torch.nn.Identity()  # HF feat_proj_layer_norm=False
    if wavlm:
        for i in range(arch["num_layers"]):
            _fuse_qkv(state, _LAYER.format(i) + "attention.")
    return state


def _fuse_qkv(state: Dict[str, torch.Tensor], prefix: str) -> None:
    """Separate q/k/v projections -> torchaudio WavLM's ``nn.MultiheadAttention`` in_proj."""
    for kind in ("weight", "bias"):
        parts = [state.pop(f"{prefix}{p}_proj.{kind}", None) for p in "qkv"]
        if kind == "bias" and parts[1] is None and parts[0] is not None:
            parts[1] = torch.zeros_like(parts[0])  # unilm rescale_init: k_proj without bias
        if all(p is not None for p in parts):
            state[f"{prefix}attention.in_proj_{kind}"] = torch.cat(parts)
        if f"{prefix}out_proj.{kind}" in state:
            state[f"{prefix}attention.out_proj.{kind}"] = state.pop(f"{prefix}out_proj.{kind}")


def _rename(state: Dict[str, torch.Tensor], rules: List[Tuple[str, str]], ignore: str,
            path: Path) -> Dict[str, torch.Tensor]:
    """Rename parameters by the first matching regex rule; unknown names are an error."""
    out, unknown = {}, []
    for key, value in state.items():
        if re.match(ignore, key):
            continue
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{path}: unrecognised parameters {unknown[:4]} (unsupported model variant?)")
    return out


def _load_weights(model: Wav2Vec2Model, state: Dict[str, torch.Tensor], kind: str, path: Path) -> None:
    """Strictly load ``state``; a mismatch is a one-line error naming the file."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the {kind} config: {_first_line(exc)}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the {kind} config: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")


# ---------------------------------------------------------------- fairseq / unilm .pt

_FAIRSEQ_IGNORE = r"(mask_emb|label_embs_concat|final_proj\.|quantizer\.|project_q\.|project_hid\.|target_glu\.)"
_L = r"encoder\.layers\.(\d+)\."
_T = r"encoder.transformer.layers.\1."
_FAIRSEQ_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"layer_norm\.(weight|bias)", _PROJ + r"layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", _PROJ + r"projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", _POS + "bias"),
    (r"encoder\.pos_conv\.0\.weight_g", _POS + "parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", _POS + "parametrizations.weight.original1"),
    (r"encoder\.pos_conv\.0\.weight", _POS + "weight"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (_L + r"self_attn\.(q|k|v|out)_proj\.(weight|bias)", _T + r"attention.\2_proj.\3"),
    (_L + r"self_attn\.relative_attention_bias\.weight", _T + "attention.rel_attn_embed.weight"),
    (_L + r"self_attn\.grep_linear\.(weight|bias)", _T + r"attention.gru_rel_pos_linear.\2"),
    (_L + r"self_attn\.grep_a", _T + "attention.gru_rel_pos_const"),
    (_L + r"self_attn_layer_norm\.(weight|bias)", _T + r"layer_norm.\2"),
    (_L + r"fc1\.(weight|bias)", _T + r"feed_forward.intermediate_dense.\2"),
    (_L + r"fc2\.(weight|bias)", _T + r"feed_forward.output_dense.\2"),
    (_L + r"final_layer_norm\.(weight|bias)", _T + r"final_layer_norm.\2"),
]
_FINETUNED_PREFIX = "w2v_encoder.w2v_model."


def _fairseq_cfgs(ckpt: Dict[str, Any], path: Path) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(model cfg, task cfg, encoder state dict) of a fairseq / unilm checkpoint."""
    cfg = _plain(ckpt.get("cfg")) or {}
    if not cfg and ckpt.get("args") is not None:  # legacy: one Namespace of model + task options
        args = _plain(ckpt["args"])
        cfg = {"model": args, "task": args}
    if not isinstance(cfg, dict) or not cfg:
        raise ValueError(f"{path}: not a fairseq/unilm checkpoint (no 'cfg' or 'args' config)")
    model_cfg, task_cfg = _cfg_pair(cfg, path)  # unilm WavLM: one flat cfg
    state = ckpt["model"]
    if "w2v_args" in model_cfg or any(k.startswith(_FINETUNED_PREFIX) for k in state):  # CTC fine-tuned
        if not model_cfg.get("w2v_args"):
            raise ValueError(f"{path}: fine-tuned checkpoint without embedded w2v_args "
                             f"(pre-trained model {model_cfg.get('w2v_path')!r} not included)")
        model_cfg, inner_task = _cfg_pair(model_cfg["w2v_args"], path)
        task_cfg = {**task_cfg, **inner_task}
        state = {k[len(_FINETUNED_PREFIX):]: v for k, v in state.items() if k.startswith(_FINETUNED_PREFIX)}
    return model_cfg, task_cfg, state


def _cfg_pair(cfg: Any, path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(model, task) sections of a fairseq cfg; a flat cfg (unilm, legacy args) serves as both."""
    model_cfg, task_cfg = (cfg.get("model", cfg), cfg.get("task", cfg)) if isinstance(cfg, dict) else (cfg, cfg)
    if not isinstance(model_cfg, dict) or not isinstance(task_cfg, dict):
        raise ValueError(f"{path}: not a fairseq/unilm checkpoint (config is {type(model_cfg).__name__})")
    return model_cfg, task_cfg


def _fairseq_kind(cfg: Dict[str, Any], state: Dict[str, Any]) -> Optional[str]:
    """hubert / wavlm / wav2vec2 from the config name or telltale parameters."""
    name = str(cfg.get("_name") or cfg.get("arch") or "").lower()
    if name.startswith("wavlm") or "relative_position_embedding" in cfg or any("grep_" in k for k in state):
        return "wavlm"
    if name.startswith("hubert") or "label_embs_concat" in state:
        return "hubert"
    if name.startswith("wav2vec") or any(k.startswith("quantizer.") for k in state):
        return "wav2vec2"
    return None


def _fairseq_arch(cfg: Dict[str, Any], wavlm: bool, path: Path) -> Dict[str, Any]:
    """torchaudio architecture from fairseq's model config (defaults: fairseq's Wav2Vec2Config)."""
    if cfg.get("extractor_mode", "default") not in ("default", "layer_norm"):
        raise NotImplementedError(f"{path}: fairseq extractor_mode={cfg['extractor_mode']!r} is not supported")
    for key, supported in (("activation_fn", "gelu"), ("layer_type", "transformer"), ("pos_conv_depth", 1),
                           ("quantize_input", False)):
        if cfg.get(key, supported) != supported:
            raise NotImplementedError(f"{path}: fairseq {key}={cfg[key]!r} is not supported by torchaudio's model")
    if wavlm and not (cfg.get("relative_position_embedding") and cfg.get("gru_rel_pos")):
        raise NotImplementedError(f"{path}: WavLM without gated relative position bias is not supported "
                                  "(torchaudio's WavLM always has it)")
    try:
        conv_layers = parse_conv_layers(cfg.get("conv_feature_layers", FAIRSEQ_CONV_LAYERS))
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ValueError(f"{path}: bad conv_feature_layers: {_first_line(exc)}") from None
    return {
        "extractor_mode": "layer_norm" if cfg.get("extractor_mode") == "layer_norm" else "group_norm",
        "conv_layers": conv_layers, "conv_bias": bool(cfg.get("conv_bias", False)),
        "dim": int(cfg.get("encoder_embed_dim", 768)), "ffn_dim": int(cfg.get("encoder_ffn_embed_dim", 3072)),
        "num_layers": int(cfg.get("encoder_layers", 12)), "num_heads": int(cfg.get("encoder_attention_heads", 12)),
        "pos_kernel": int(cfg.get("conv_pos", 128)), "pos_groups": int(cfg.get("conv_pos_groups", 16)),
        "layer_norm_first": bool(cfg.get("layer_norm_first", False)),
        "num_buckets": int(cfg.get("num_buckets", 320)), "max_distance": int(cfg.get("max_distance", 1280)),
    }


def load_fairseq(path: Path) -> SSLModel:
    """A fairseq (HuBERT, wav2vec 2.0) or microsoft/unilm (WavLM) ``.pt`` checkpoint."""
    ckpt = load_checkpoint_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path}: not a fairseq/unilm checkpoint (expected a dict with 'model' and 'cfg'/'args')")
    model_cfg, task_cfg, state = _fairseq_cfgs(ckpt, path)
    kind = _fairseq_kind(model_cfg, state)
    arch = _fairseq_arch(model_cfg, kind == "wavlm", path)
    model = _build(arch, kind == "wavlm")
    state = _finish_state(_rename(state, _FAIRSEQ_RULES, _FAIRSEQ_IGNORE, path), arch, kind == "wavlm", model)
    _load_weights(model, state, kind or "fairseq", path)
    return SSLModel(model, kind, arch, bool(task_cfg.get("normalize", False)))


# ---------------------------------------------------------------- Hugging Face dir

_HF_IGNORE = r"(masked_spec_embed|lm_head\.|quantizer\.|project_q\.|project_hid\.|projector\.|classifier\.)"
_HF_RULES = [
    (r"feature_extractor\.(conv_layers\.\d+\.(conv|layer_norm)\.(weight|bias))", r"feature_extractor.\1"),
    (r"feature_projection\.((layer_norm|projection)\.(weight|bias))", _PROJ + r"\1"),
    (r"encoder\.pos_conv_embed\.conv\.weight_g", _POS + "parametrizations.weight.original0"),
    (r"encoder\.pos_conv_embed\.conv\.weight_v", _POS + "parametrizations.weight.original1"),
    (r"encoder\.(.+)", r"encoder.transformer.\1"),
]
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _read_weight_file(path: Path) -> Dict[str, torch.Tensor]:
    """One safetensors or PyTorch weight file."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path}: reading safetensors needs `pip install safetensors`") from None
        return load_file(str(path))
    return load_torch(path)


def _hf_state(directory: Path) -> Dict[str, torch.Tensor]:
    """All weights of an HF model dir (single file or sharded with an index)."""
    found = next((directory / n for n in _HF_WEIGHTS if (directory / n).is_file()), None)
    if found is None:
        raise ValueError(f"{directory}: no model.safetensors or pytorch_model.bin")
    files = [found]
    if found.suffix == ".json":
        files = [directory / f for f in sorted(set(json.loads(found.read_text())["weight_map"].values()))]
    state: Dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_weight_file(f))
    prefix = next((p for p in ("", "wav2vec2.", "hubert.", "wavlm.")
                   if p + "feature_projection.projection.weight" in state), "")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _hf_arch(cfg: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """torchaudio architecture from an HF config.json (defaults: transformers' Wav2Vec2Config)."""
    for key, supported in (("feat_extract_activation", "gelu"), ("hidden_act", "gelu"),
                           ("conv_pos_batch_norm", False), ("adapter_attn_dim", None)):
        if cfg.get(key, supported) != supported:
            raise NotImplementedError(f"{path}: config {key}={cfg[key]!r} is not supported by torchaudio's model")
    if cfg.get("feat_extract_norm", "group") not in ("group", "layer"):
        raise NotImplementedError(f"{path}: config feat_extract_norm={cfg['feat_extract_norm']!r} is not supported")
    if abs(float(cfg.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
        logger.warning("%s: layer_norm_eps=%s, torchaudio uses 1e-5", path, cfg["layer_norm_eps"])
    conv = list(zip(cfg.get("conv_dim", [512] * 7), cfg.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]),
                    cfg.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])))
    return {
        "extractor_mode": f"{cfg.get('feat_extract_norm', 'group')}_norm",
        "conv_layers": [tuple(int(v) for v in c) for c in conv], "conv_bias": bool(cfg.get("conv_bias", False)),
        "dim": int(cfg.get("hidden_size", 768)), "ffn_dim": int(cfg.get("intermediate_size", 3072)),
        "num_layers": int(cfg.get("num_hidden_layers", 12)), "num_heads": int(cfg.get("num_attention_heads", 12)),
        "pos_kernel": int(cfg.get("num_conv_pos_embeddings", 128)),
        "pos_groups": int(cfg.get("num_conv_pos_embedding_groups", 16)),
        "layer_norm_first": bool(cfg.get("do_stable_layer_norm", False)),
        "num_buckets": int(cfg.get("num_buckets", 320)), "max_distance": int(cfg.get("max_bucket_distance", 800)),
    }


def _hf_normalize(directory: Path, arch: Dict[str, Any]) -> bool:
    """``do_normalize`` of preprocessor_config.json; without one, normalise layer-norm-extractor models."""
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        return bool(json.loads(pre.read_text()).get("do_normalize", False))
    normalize = arch["extractor_mode"] == "layer_norm"
    logger.info("%s: no preprocessor_config.json; normalize=%s (from the %s extractor)", directory, normalize,
                arch["extractor_mode"])
    return normalize


def load_huggingface(directory: Path) -> SSLModel:
    """A Hugging Face HuBERT / WavLM / Wav2Vec2 model dir (as written by ``save_pretrained``)."""
    config = directory / "config.json"
    if not config.is_file():
        raise ValueError(f"{directory}: not a Hugging Face model dir (no config.json)")
    try:
        cfg = json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config}: unreadable JSON ({exc})") from None
    kind = str(cfg.get("model_type", ""))
    if kind not in ("hubert", "wavlm", "wav2vec2"):
        raise ValueError(f"{directory}: model_type {kind!r} is not hubert, wavlm or wav2vec2")
    arch = _hf_arch(cfg, directory)
    model = _build(arch, kind == "wavlm")
    state = _finish_state(_rename(_hf_state(directory), _HF_RULES, _HF_IGNORE, directory), arch, kind == "wavlm",
                          model)
    _load_weights(model, state, kind, directory)
    return SSLModel(model, kind, arch, _hf_normalize(directory, arch))


def load_ssl_model(checkpoint: Path) -> SSLModel:
    """Load an HF model dir or a fairseq/unilm ``.pt`` file into torchaudio's model."""
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file or directory")
    return load_huggingface(checkpoint) if checkpoint.is_dir() else load_fairseq(checkpoint)
