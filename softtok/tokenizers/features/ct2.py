"""Reader of CTranslate2's ``model.bin`` (binary versions 4-6), so its weights can run in PyTorch.

Layout (ctranslate2 ``specs/model_spec.py`` ``_serialize``; ``src/models/model.cc`` ``Model::load``), little-endian:
uint32 binary version, string spec name, uint32 spec revision, uint32 variable count, then per variable
string name, uint8 rank, rank × uint32 shape, uint8 dtype id, uint32 byte count, the bytes; then uint32 alias
count and (alias, target) string pairs. A string is a uint16 length (NUL included) and the NUL-terminated bytes.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

MIN_VERSION, MAX_VERSION = 4, 6  # version 4 introduced the dtype id + byte count written today
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)  # ctranslate2 DataType


@dataclass
class CT2Model:
    """The spec name and revision of a CTranslate2 model and (a prefix's worth of) its variables."""

    path: str
    spec: str
    revision: int
    variables: Dict[str, torch.Tensor] = field(default_factory=dict)
    names: List[str] = field(default_factory=list)  # every variable and alias name in the file


class _Reader:
    """Little-endian fields of one open model.bin; a short read is a one-line error naming the file."""

    def __init__(self, f: BinaryIO, path: str):
        self.f, self.path = f, path

    def read(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError(f"{self.path}: truncated model.bin ({what} at byte {self.f.tell() - len(data)})")
        return data

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.uint("H", what)
        return self.read(n, what).rstrip(b"\0").decode("utf-8")


def _variable(r: _Reader, keep: Callable[[str], bool]) -> Tuple[str, Optional[torch.Tensor]]:
    """One variable: its name and tensor (None, its bytes skipped, when ``keep(name)`` is false)."""
    name = r.string("variable name")
    shape = [r.uint("I", f"{name} shape") for _ in range(r.uint("B", f"{name} rank"))]
    type_id, num_bytes = r.uint("B", f"{name} dtype"), r.uint("I", f"{name} byte count")
    if type_id >= len(DTYPES):
        raise ValueError(f"{r.path}: variable {name} has unknown dtype id {type_id}")
    if not keep(name):
        r.f.seek(num_bytes, 1)
        return name, None
    data = bytearray(r.read(num_bytes, f"{name} data"))
    tensor = torch.frombuffer(data, dtype=DTYPES[type_id]) if num_bytes else torch.empty(0, dtype=DTYPES[type_id])
    return name, tensor.reshape(shape)


def read_ct2_model(model_dir: str | Path, prefix: str = "", weights: bool = True) -> CT2Model:
    """Spec, revision, every variable name and the variables whose names start with ``prefix`` (aliases
    resolved) of a model dir; ``weights=False`` reads the names only."""
    path = Path(model_dir) / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: not a CTranslate2 model dir (no model.bin)")
    with open(path, "rb") as f:
        r = _Reader(f, str(path))
        version = r.uint("I", "binary version")
        if not MIN_VERSION <= version <= MAX_VERSION:
            raise ValueError(f"{path}: binary version {version} not supported ({MIN_VERSION}..{MAX_VERSION})")
        model = CT2Model(str(path), r.string("spec name"), r.uint("I", "spec revision"))
        for _ in range(r.uint("I", "variable count")):
            name, tensor = _variable(r, lambda n: weights and n.startswith(prefix))
            model.names.append(name)
            if tensor is not None:
                model.variables[name] = tensor
        for _ in range(r.uint("I", "alias count")):
            alias, target = r.string("alias"), r.string("alias target")
            model.names.append(alias)
            if not (weights and alias.startswith(prefix)):
                continue
            if target in model.variables:
                model.variables[alias] = model.variables[target]
            else:  # the target lies outside the prefix: read the file again for it
                model.variables[alias] = read_ct2_model(model_dir, target).variables[target]
    logger.debug("%s: %s rev %d, %d variables (%d kept)", path, model.spec, model.revision, len(model.names),
                 len(model.variables))
    return model
