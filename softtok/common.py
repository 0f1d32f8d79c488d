"""Small helpers every room's command-line entry point shares: logging set-up, YAML options, error handling."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Dict

import yaml

USER_ERRORS = (ValueError, FileNotFoundError, ImportError, NotImplementedError)


def yaml_mapping(text: str) -> Dict[str, Any]:
    """argparse type for ``--*-conf '{tau: 8}'`` options (a YAML or JSON mapping)."""
    value = yaml.safe_load(text) if text else {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping like '{{tau: 8}}', got {text!r}")
    return value


def setup_logging(level: str | int = "INFO") -> None:
    """ESPnet-style log lines on stderr; quiets faiss's per-CPU-variant loader messages."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def run_job(name: str, job: Callable[[], Dict[str, Any]], logger: logging.Logger) -> int:
    """Run a job: its summary as one ``<name> done: k=v, ...`` line (exit 0), or bad input as one error line (exit 1)."""
    try:
        summary = job()
    except USER_ERRORS as exc:
        logger.error("%s: %s", name, exc)
        return 1
    logger.info("%s done: %s", name, ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
