"""CHiME-4 (WSJ prompts read in noisy places, licensed via the challenge): the 1-channel track as Kaldi data dirs.

No checksums are published for it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Sequence, Tuple

from softtok.recipes.corpora.common import download, require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

CHIME4_ENVIRONMENTS = ("bus", "caf", "ped", "str")


def normalize_wsj(text: str) -> str:
    """WSJ prompt text as read: noise tags (``[door_slam]``, ``<NOISE>``) dropped, ``*`` (mispronounced) and
    ``~`` / ``:`` markers removed; an approximation of Kaldi's ``normalize_transcript.pl``."""
    words = []
    for token in text.split():
        if token.startswith(("[", "<", "{")) or token in ("~", "."):
            continue
        token = token.replace("*", "").replace(":", "").replace("~", "")
        if token:
            words.append(token)
    return " ".join(words)


def _chime4_data(corpus_dir: str | Path) -> Path:
    """CHiME-4's ``data/`` folder: ``corpus_dir/data`` or ``corpus_dir`` itself."""
    corpus = Path(corpus_dir).resolve()
    return corpus / "data" if (corpus / "data" / "audio").is_dir() else corpus


def _read_dot(path: Path) -> Dict[str, str]:
    """``WORDS ... (UTTERANCE_ID)`` lines of a ``.dot_all`` file -> {upper-case id: normalised words}."""
    entries = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        match = re.match(r"^(.*)\(([^()\s]+)\)\s*$", line)
        if not match:
            raise DataError(f"{path}:{lineno}: expected 'WORDS (UTTERANCE_ID)'")
        entries[match.group(2).upper()] = normalize_wsj(match.group(1))
    if not entries:
        raise DataError(f"{path}: no transcriptions")
    return entries


def _read_chime4_set(data: Path, part: str, kind: str) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]:
    """wav, text, utt2spk of ``<part>_<kind>`` (e.g. et05 real) over the four environments of the 1-channel track."""
    dot = data / "transcriptions" / f"{part}_{kind}.dot_all"
    transcripts = _read_dot(dot)
    wav, text, utt2spk = {}, {}, {}
    for env in CHIME4_ENVIRONMENTS:
        folder = data / "audio" / "16kHz" / "isolated_1ch_track" / f"{part}_{env}_{kind}"
        files = sorted(folder.glob("*.wav"))
        if not files:
            raise DataError(f"{folder}: no .wav files; is this a chime4 folder? Download: {download('chime4')}")
        for path in files:
            key = path.name.split(".")[0].upper()  # F05_440C0201_BUS.CH5.wav -> F05_440C0201_BUS
            if key not in transcripts:
                raise DataError(f"{path}: utterance {key!r} has no transcription in {dot}")
            utt = f"{key}_{kind.upper()}"
            if utt in wav:
                raise DataError(f"{path}: utterance {utt!r} occurs twice in {folder.parent}")
            wav[utt], text[utt], utt2spk[utt] = str(path), transcripts[key], key.split("_")[0]
    return wav, text, utt2spk


def prepare_chime4(corpus_dir: str | Path, out_dir: str | Path, part: str = "et05",
                   kinds: Sequence[str] = ("real", "simu")) -> Dict[str, Path]:
    """CHiME-4 1-channel track ``<part>`` (default the et05 evaluation set), real and simulated, as
    ``chime4_<part>_<kind>``.

    Assumed layout (that of the CHiME-4 release and Kaldi's ``egs/chime4`` scripts):
    ``data/audio/16kHz/isolated_1ch_track/<part>_{bus,caf,ped,str}_<kind>/<SPK>_<PROMPT>_<ENV>.CH<n>.wav`` and
    ``data/transcriptions/<part>_<kind>.dot_all`` with lines ``WORDS (<SPK>_<PROMPT>_<ENV>)``. Utterance ids are
    ``<SPK>_<PROMPT>_<ENV>_<KIND>``, speakers ``<SPK>``. ``corpus_dir`` is the folder holding ``data/``.
    """
    data = _chime4_data(corpus_dir)
    for kind in kinds:
        require_corpus_path(data / "transcriptions" / f"{part}_{kind}.dot_all", "chime4")
        for env in CHIME4_ENVIRONMENTS:
            require_corpus_path(data / "audio" / "16kHz" / "isolated_1ch_track" / f"{part}_{env}_{kind}", "chime4")
    parsed = {kind: _read_chime4_set(data, part, kind) for kind in kinds}
    result = {}
    for kind, (wav, text, utt2spk) in parsed.items():
        name = f"chime4_{part}_{kind}"
        result[name] = write_data_dir(Path(out_dir) / name, wav, text, utt2spk)
        logger.info("chime4 %s %s: %d utterances -> %s", part, kind, len(wav), result[name])
    return result
