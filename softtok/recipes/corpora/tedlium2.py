"""TED-LIUM release 2 (TED talks, CC BY-NC-ND 3.0): dev and test as segmented Kaldi data dirs.

Texts keep the words as spoken, less the markers a recogniser cannot produce (noise tags, ``<unk>``,
pronunciation-variant numbers); case and punctuation are left to the scorer's normaliser. ``CHECKSUMS``: the
archive's SHA-256 as torchaudio pins it (``torchaudio/datasets/tedlium.py``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from softtok.recipes.corpora.common import check_sphere, download, require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

CHECKSUMS = {"TEDLIUM_release2.tar.gz": "93281b5fcaaae5c88671c9d000b443cb3c7ea3499ad12010b3934ca41a7b9c58"}
TEDLIUM_IGNORE = "ignore_time_segment_in_scoring"


def normalize_tedlium(text: str) -> str:
    """TED-LIUM words as spoken: no ``{NOISE}``-style tags or ``<unk>``, no ``(2)`` variant numbers, and the
    tokenised contractions joined again (``it 's`` -> ``it's``)."""
    words: List[str] = []
    for token in text.split():
        if token.startswith(("{", "<", "[")):
            continue
        token = re.sub(r"\(\d+\)$", "", token)
        if token.startswith("'") and words:
            words[-1] += token
        elif token:
            words.append(token)
    return " ".join(words)


def _read_stm(stm: Path, duration: float) -> List[Tuple[str, str, float, float, str]]:
    """(utt, speaker, start, end, text) of one talk's scored segments; ends are clipped to the audio's duration."""
    rows = []
    for lineno, line in enumerate(stm.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split(maxsplit=6)
        if len(fields) < 6:
            raise DataError(f"{stm}:{lineno}: expected 'talk channel speaker start end <label> text'")
        speaker, text = fields[2], (fields[6] if len(fields) == 7 else "")
        if text.strip() == TEDLIUM_IGNORE:
            continue
        try:
            start, end = float(fields[3]), min(float(fields[4]), duration)
        except ValueError:
            raise DataError(f"{stm}:{lineno}: start/end are not numbers") from None
        words = normalize_tedlium(text)
        if not words or end <= start:
            continue
        rows.append((f"{speaker}-{int(round(start * 100)):07d}-{int(round(end * 100)):07d}", speaker, start, end,
                     words))
    return rows


def _read_tedlium_split(folder: Path) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str], Dict[str, str]]:
    """wav (per talk), segments, text, utt2spk of one TED-LIUM split."""
    stms = sorted((folder / "stm").glob("*.stm"))
    if not stms:
        raise DataError(f"{folder / 'stm'}: no .stm files; is this a tedlium2 split? Download: {download('tedlium2')}")
    wav, segments, text, utt2spk = {}, {}, {}, {}
    for stm in stms:
        sph = folder / "sph" / f"{stm.stem}.sph"
        if not sph.is_file():
            raise DataError(f"{sph}: audio of {stm} not found")
        info = check_sphere(sph)
        wav[stm.stem] = str(sph)
        for utt, speaker, start, end, words in _read_stm(stm, info.frames / info.samplerate):
            if utt in segments:
                raise DataError(f"{stm}: segment {utt!r} occurs twice")
            segments[utt] = f"{stm.stem} {start:.2f} {end:.2f}"
            text[utt], utt2spk[utt] = words, speaker
    if not segments:
        raise DataError(f"{folder / 'stm'}: no scored segments")
    return wav, segments, text, utt2spk


def prepare_tedlium2(corpus_dir: str | Path, out_dir: str | Path,
                     splits: Sequence[str] = ("dev", "test")) -> Dict[str, Path]:
    """TED-LIUM release 2 ``dev``/``test`` as ``tedlium2_<split>``: one segment per scored .stm line (Kaldi ids
    ``<speaker>-<start cs>-<end cs>``), ``ignore_time_segment_in_scoring`` lines skipped, audio read from the
    talk's .sph through ``segments``. ``corpus_dir`` is ``TEDLIUM_release2/``."""
    corpus = Path(corpus_dir).resolve()
    for split in splits:
        require_corpus_path(corpus / split / "stm", "tedlium2")
        require_corpus_path(corpus / split / "sph", "tedlium2")
    parsed = {split: _read_tedlium_split(corpus / split) for split in splits}
    result = {}
    for split, (wav, segments, text, utt2spk) in parsed.items():
        name = f"tedlium2_{split}"
        result[name] = write_data_dir(Path(out_dir) / name, wav, text, utt2spk, segments=segments)
        logger.info("tedlium2 %s: %d segments of %d talks -> %s", split, len(segments), len(wav), result[name])
    return result
