"""Listening samples: a few evenly spaced utterances of each set under every condition of its table, written as
small Opus files ``<results dir>/samples/<set>/<utt>/<condition>.opus`` to be committed beside RESULTS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Set

import soundfile as sf
import torch

from softtok.recipes.voc.results import Condition, condition_audio
from softtok.tokenizers.audio import TARGET_SAMPLE_RATE
from softtok.tokenizers.datadir import evenly_spaced, load_data_dir
from softtok.tokenizers.fileio import atomic_path

DEFAULT_N = 3
SAMPLES_DIR = "samples"
# libsndfile's Opus encodes 8, 12, 16, 24 or 48 kHz: 16 kHz is every metric's rate. Level 0.9 is about 32 kbit/s,
# some 16 KB per 4 s of speech (1.0 is ~8 kbit/s and audibly coded; 0.75 ~70 kbit/s)
COMPRESSION_LEVEL = 0.9


def write_opus(path: Path, wave: torch.Tensor) -> None:
    """A 16 kHz mono waveform as Ogg/Opus, written to a temporary name and renamed."""
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wave.detach().cpu().numpy(), TARGET_SAMPLE_RATE, format="OGG", subtype="OPUS",
                 compression_level=COMPRESSION_LEVEL)


def write_samples(rows: Sequence[Condition], data: str, set_name: str, out_dir: Path,
                  n: int = DEFAULT_N) -> Dict[str, Any]:
    """``n`` evenly spaced utterances of a set (the same every run) under every row; returns their files
    relative to ``out_dir`` ({"utts": [...], "files": {condition: {utt: path}}}). Stale samples of the set go."""
    utts = evenly_spaced(load_data_dir(f"{data}/{set_name}").utt_ids, n)
    files: Dict[str, Dict[str, str]] = {}
    for cond in rows:
        read = condition_audio(cond, data, set_name)
        files[cond.name] = {}
        for utt in utts:
            rel = Path(SAMPLES_DIR) / set_name / utt / f"{cond.name}.opus"
            write_opus(out_dir / rel, read(utt))
            files[cond.name][utt] = rel.as_posix()
    kept = {out_dir / f for per_cond in files.values() for f in per_cond.values()}
    _remove_stale(out_dir / SAMPLES_DIR / set_name, kept)
    return {"utts": utts, "files": files}


def _remove_stale(set_dir: Path, kept: Set[Path]) -> None:
    """Samples of an earlier run's utterances or conditions, and the folders they leave empty."""
    for old in set_dir.glob("*/*.opus"):
        if old not in kept:
            old.unlink()
    for folder in set_dir.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
