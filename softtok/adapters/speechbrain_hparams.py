"""A SpeechBrain recipe's hyperparams.yaml and checkpoint folder, read without running them.

SpeechBrain builds a recipe by executing its YAML (``!new:``, ``!name:``, ``!apply:`` tags import and call any
dotted path, and the recipe's ``codec`` would download its SSL model). Here the references (``!ref``) are
resolved with HyperPyYAML's own resolver, the tags are kept as data, and only the modules an adapter names are
built later from an allow-list. Checkpoints are SpeechBrain's ``CKPT+…`` folders: one ``<recoverable>.ckpt``
state dict per entry of ``checkpointer.recoverables`` (a ``torch.nn.ModuleList`` entry keeps its members under
``0.``, ``1.``, …), picked and read with SpeechBrain's own :class:`~speechbrain.utils.checkpoints.Checkpointer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from softtok.adapters import AdapterError

Tree = Dict[str, Any]


@dataclass
class ObjectSpec:
    """One ``!new:`` object of the YAML: its key (for messages), dotted class path and keyword arguments."""

    key: str
    cls: str
    kwargs: Dict[str, Any]
    node: Any  # the YAML node itself: a reference to it elsewhere is the same object

    @property
    def name(self) -> str:
        return self.cls.rsplit(".", 1)[-1]


def require_speechbrain() -> None:
    """One line naming the extra to install when SpeechBrain (and its HyperPyYAML) is missing."""
    try:
        import hyperpyyaml  # noqa: F401
        import speechbrain  # noqa: F401
    except ImportError as exc:
        raise AdapterError(f"SpeechBrain models need speechbrain ({exc}): pip install 'softtok[adapters]'") from None


def tag_of(node: Any) -> str:
    """A ruamel node's tag (``!new:torch.nn.ModuleList``), or '' for plain data."""
    tag = getattr(node, "tag", None)
    return (getattr(tag, "value", None) or "") if tag is not None else ""


def _placeholders(node: Any) -> Optional[Dict[str, Any]]:
    """Overrides that set every ``!PLACEHOLDER`` under mapping keys to null (data paths inference never reads)."""
    if not hasattr(node, "items"):
        return None
    found: Dict[str, Any] = {}
    for key, value in node.items():
        if tag_of(value) == "!PLACEHOLDER":
            found[key] = None
        else:
            inner = _placeholders(value)
            if inner:
                found[key] = inner
    return found


def _refuse_code_tags(node: Any, where: str, path: str = "") -> None:
    """``!applyref:`` calls a function while references are resolved; refuse it before resolving."""
    if tag_of(node).startswith("!applyref:"):
        raise AdapterError(f"{where}: {path or 'root'}: {tag_of(node)} runs code while the YAML is read; not read")
    children = node.items() if hasattr(node, "items") else enumerate(node) if isinstance(node, list) else []
    for key, value in children:
        _refuse_code_tags(value, where, f"{path}.{key}" if path else str(key))


def read_hparams(path: Path) -> Tree:
    """The recipe's YAML with references resolved and tags kept as data (nothing imported or called)."""
    import ruamel.yaml
    from hyperpyyaml import resolve_references

    if not path.is_file():
        raise AdapterError(f"{path}: hyperparams file not found")
    yaml = ruamel.yaml.YAML()
    try:
        with open(path, encoding="utf-8") as f:
            preview = yaml.load(f)
        if not hasattr(preview, "items"):
            raise AdapterError(f"{path}: not a YAML mapping of hyperparameters")
        _refuse_code_tags(preview, str(path))
        with open(path, encoding="utf-8") as f:
            resolved = resolve_references(f, _placeholders(preview) or None)
        return yaml.load(resolved)
    except (ruamel.yaml.YAMLError, ValueError, KeyError) as exc:
        if isinstance(exc, AdapterError):
            raise
        raise AdapterError(f"{path}: cannot resolve its references: {str(exc).splitlines()[0]}") from None


def plain(value: Any, where: str) -> Any:
    """A YAML value as plain Python (dict, list, scalars); a tagged object inside is refused, naming ``where``."""
    tag = tag_of(value)
    if tag and not tag.startswith("tag:yaml.org"):
        raise AdapterError(f"{where}: {tag} (an object, not a value) is not supported here")
    if hasattr(value, "items"):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return builtin(value)


def builtin(value: Any) -> Any:
    """A ruamel scalar (ScalarFloat, ScalarBoolean, …) as the Python type it stands for, so specs dump safely."""
    from ruamel.yaml.scalarbool import ScalarBoolean

    if isinstance(value, (bool, ScalarBoolean)):
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def lookup(tree: Tree, *keys: str) -> Tuple[Optional[str], Any]:
    """(key, value) of the first of ``keys`` present (dotted for nested mappings), else (None, None)."""
    for key in keys:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
            if node is None:
                break
        if node is not None:
            return key, node
    return None, None


def object_spec(tree: Tree, *keys: str, where: str) -> Optional[ObjectSpec]:
    """The ``!new:`` object under the first of ``keys`` present (None if none is); ``where``: the file."""
    key, node = lookup(tree, *keys)
    if key is None:
        return None
    tag = tag_of(node)
    if not tag.startswith("!new:"):
        raise AdapterError(f"{where}: {key}: expected a !new: object, found {tag or 'a plain value'}")
    kwargs = {str(k): plain(v, f"{key}.{k}") for k, v in node.items()} if hasattr(node, "items") else {}
    return ObjectSpec(key, tag[len("!new:"):], kwargs, node)


def recoverables(tree: Tree) -> Dict[str, Any]:
    """``checkpointer.recoverables``: recoverable name → YAML node (empty without a checkpointer)."""
    _, found = lookup(tree, "checkpointer.recoverables")
    return dict(found.items()) if hasattr(found, "items") else {}


def locate(tree: Tree, spec: ObjectSpec) -> Tuple[str, str]:
    """(recoverable name, key prefix) whose ``.ckpt`` holds ``spec``'s state dict: its own recoverable, else a
    ``torch.nn.ModuleList`` recoverable listing it (prefix ``<index>.``)."""
    found = recoverables(tree)
    for name, node in found.items():
        if node is spec.node:
            return name, ""
    for name, node in found.items():
        if tag_of(node) == "!new:torch.nn.ModuleList" and isinstance(node, list) and node:
            members = node[0] if isinstance(node[0], list) else node
            for i, member in enumerate(members):
                if member is spec.node:
                    return name, f"{i}."
    raise AdapterError(f"{spec.key}: not among checkpointer.recoverables (nor in a ModuleList there), so no "
                       "checkpoint file holds its weights")


def find_recoverable(tree: Tree, cls_suffix: str) -> Optional[str]:
    """The recoverable name of the first object whose class path ends with ``cls_suffix``."""
    for name, node in recoverables(tree).items():
        if tag_of(node).startswith("!new:") and tag_of(node).endswith(cls_suffix):
            return name
    return None


def pick_checkpoint(ckpt_dir: Path, min_key: Optional[str] = None, max_key: Optional[str] = None) -> Path:
    """A ``CKPT+…`` folder: ``ckpt_dir`` itself, or of the save folder's checkpoints the one SpeechBrain's
    Checkpointer picks (``min_key`` / ``max_key`` of their meta, default the lowest WER where recorded, else the
    newest)."""
    from speechbrain.utils.checkpoints import METAFNAME, Checkpointer

    if (ckpt_dir / METAFNAME).is_file():
        return ckpt_dir
    if not ckpt_dir.is_dir():
        raise AdapterError(f"{ckpt_dir}: checkpoint folder not found")
    checkpointer = Checkpointer(ckpt_dir)
    found = checkpointer.list_checkpoints()
    if not found:
        raise AdapterError(f"{ckpt_dir}: no SpeechBrain checkpoint ({METAFNAME} in a CKPT+ folder) here")
    if min_key is None and max_key is None and all("WER" in c.meta for c in found):
        min_key = "WER"
    chosen = checkpointer.find_checkpoint(min_key=min_key, max_key=max_key)
    if chosen is None:
        raise AdapterError(f"{ckpt_dir}: no checkpoint records {min_key or max_key} in its {METAFNAME}")
    return Path(chosen.path)


def load_state(path: Path, prefix: str = "") -> Dict[str, Any]:
    """The state dict in a ``.ckpt`` (SpeechBrain's loader, its key patches applied), ``prefix`` stripped."""
    from speechbrain.utils.checkpoints import torch_patched_state_dict_load

    if not path.is_file():
        raise AdapterError(f"{path}: checkpoint file not found")
    try:
        state = torch_patched_state_dict_load(path, "cpu")
    except Exception as exc:  # torch.load's weights-only unpickler refuses anything but tensors and plain data
        raise AdapterError(f"{path}: not a state dict: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise AdapterError(f"{path}: not a state dict")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def flag_list(value: Any, count: int) -> List[Any]:
    """A per-layer hparam (a list, or one value for every layer) as a list of ``count``."""
    return list(value) if isinstance(value, list) else [value] * count
