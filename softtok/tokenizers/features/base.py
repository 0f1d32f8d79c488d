"""The Featurizer contract and its registry (``--feature NAME`` + options)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Type

import torch


class Featurizer:
    """Maps a 16 kHz mono waveform (S,) to frame features (T, dim).

    Subclasses set ``name``, ``dim`` and ``frame_rate`` (frames per second) and may
    override :meth:`batch` when padded batching is exact for them.
    """

    name: str = ""
    dim: int = 0
    frame_rate: float = 0.0
    layers_note: str = ""  # what ``layer`` N means, where a report should say it
    max_samples: Optional[int] = None  # the longest 16 kHz input it takes (None: any); longer audio is refused by name

    def __call__(self, wave_16k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batch(self, waves: List[torch.Tensor]) -> List[torch.Tensor]:
        """Features of several utterances; the default runs them one at a time."""
        return [self(w) for w in waves]

    @classmethod
    def count_layers(cls, checkpoint: Optional[str]) -> int:
        """Layers a ``layer`` option can pick in ``checkpoint`` (encoders only)."""
        raise ValueError(f"feature {cls.name!r} has no encoder layers")

    def layer_outputs(self, wave_16k: torch.Tensor) -> List[torch.Tensor]:
        """Outputs (T, dim) of layers 1..``self.layer`` of one waveform, in one pass (encoders only)."""
        raise ValueError(f"feature {self.name!r} has no encoder layers")

    def spec(self) -> Dict[str, Any]:
        """What identifies these features (written to feats.yaml, checked by k-means)."""
        return {"feature": self.name, "dim": self.dim, "frame_rate": self.frame_rate}


FEATURIZERS: Dict[str, Callable[..., Featurizer]] = {}


def register_featurizer(name: str) -> Callable:
    """Class decorator adding a featurizer to the registry under ``name``."""

    def wrap(cls):
        FEATURIZERS[name] = cls
        return cls

    return wrap


def check_layer(layer: Any, num_layers: int, source: str) -> int:
    """``layer`` as an int when it names one of layers 1..``num_layers`` of ``source``, else a one-line error."""
    if isinstance(layer, bool) or int(layer) != layer or not 1 <= layer <= num_layers:
        raise ValueError(f"layer {layer!r} out of range 1..{num_layers} for {source}")
    return int(layer)


def featurizer_class(name: str) -> Type[Featurizer]:
    """The registered featurizer class of ``name``; an unknown name is a one-line error.

    The registry is full whenever this module is: importing it first runs the package's ``__init__``, which
    imports (registers) every built-in featurizer.
    """
    if name not in FEATURIZERS:
        raise ValueError(f"unknown feature {name!r}; choose from {sorted(FEATURIZERS)}")
    return FEATURIZERS[name]


def has_layers(name: str) -> bool:
    """Whether feature ``name`` is an encoder (SSL, Whisper) whose layers a ``layer`` option picks: it counts them."""
    return featurizer_class(name).count_layers.__func__ is not Featurizer.count_layers.__func__


def build_featurizer(name: str, checkpoint: Optional[str] = None, layer: Optional[int] = None,
                     device: Optional[str] = None, **options: Any) -> Featurizer:
    """Build a registered featurizer; unknown names or options are one-line errors."""
    cls = featurizer_class(name)
    kwargs = dict(options)
    if checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    if layer is not None:
        kwargs["layer"] = layer
    if device is not None:
        kwargs["device"] = device
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"feature {name!r}: bad options {sorted(kwargs)}: {exc}") from None
