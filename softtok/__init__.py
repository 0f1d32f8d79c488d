"""softtok: soft assignments of SSL-derived discrete speech tokens for downstream inference.

``softtok.load(bundle)`` returns a trained model ready to run from audio (imported on first use, so the command
line starts without torch).
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load":
        from softtok.inference.model import load

        return load
    raise AttributeError(f"module 'softtok' has no attribute {name!r}")
