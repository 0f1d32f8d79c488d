"""LJSpeech-1.1 (one reader, public domain): the unit-vocoder target voice as train, dev and test_id.

``CHECKSUMS``: the archive's SHA-256 as torchaudio pins it (``torchaudio/datasets/ljspeech.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

from softtok.recipes.corpora.common import one_line, require_corpus_path
from softtok.tokenizers.datadir import DataError, evenly_spaced, write_data_dir

logger = logging.getLogger(__name__)

CHECKSUMS = {"LJSpeech-1.1.tar.bz2": "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"}
DEFAULT_LJ_TEST = 100


def _read_metadata(corpus: Path) -> tuple[Dict[str, str], Dict[str, str]]:
    """wav, text of every ``metadata.csv`` line (``id|text|normalized_text``), each audio file checked to exist."""
    metadata = corpus / "metadata.csv"
    wav, text = {}, {}
    with open(metadata, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) != 3:
                raise DataError(f"{metadata}:{lineno}: expected id|text|normalized_text, got {len(fields)} fields")
            utt, normalized = fields[0].strip(), one_line(fields[2])
            if not utt or len(utt.split()) != 1 or "/" in utt:
                raise DataError(f"{metadata}:{lineno}: bad utterance id {fields[0]!r}")
            if utt in wav:
                raise DataError(f"{metadata}:{lineno}: duplicate utterance id {utt!r}")
            if not normalized:
                raise DataError(f"{metadata}:{lineno}: utterance {utt!r} has no normalized text")
            path = corpus / "wavs" / f"{utt}.wav"
            if not path.is_file():
                raise DataError(f"{path}: audio of {utt!r} (line {lineno} of {metadata}) not found")
            wav[utt], text[utt] = str(path), normalized
    if not wav:
        raise DataError(f"{metadata}: no utterances")
    return wav, text


def prepare_ljspeech(corpus_dir: str | Path, out_dir: str | Path, n_test: int = DEFAULT_LJ_TEST,
                     n_dev: int = 0) -> Dict[str, Path]:
    """LJSpeech-1.1 as ``train``, ``dev`` (when ``n_dev`` > 0) and ``test_id``: ``n_test`` utterances evenly spaced
    over the sorted ids (all chapters) are test_id, then ``n_dev`` evenly spaced over the rest are dev (τ sweep,
    validation), the rest train. Deterministic, no seed.

    Layout: ``metadata.csv`` (``id|text|normalized_text``, UTF-8) and ``wavs/<id>.wav`` (22.05 kHz). The text
    is the normalized column (numbers and abbreviations spelled out; case and punctuation are kept, scoring
    normalises them), speaker ``LJ``. wav.scp points to the original files: read_audio resamples to 16 kHz.
    """
    corpus = Path(corpus_dir).resolve()
    require_corpus_path(corpus / "metadata.csv", "ljspeech")
    require_corpus_path(corpus / "wavs", "ljspeech")
    wav, text = _read_metadata(corpus)
    if not (isinstance(n_test, int) and 1 <= n_test < len(wav)):
        raise DataError(f"n_test must be an integer in [1, {len(wav) - 1}] for {len(wav)} utterances, got {n_test!r}")
    if not (isinstance(n_dev, int) and 0 <= n_dev < len(wav) - n_test):
        raise DataError(f"n_dev must be an integer in [0, {len(wav) - n_test - 1}] for {len(wav)} utterances and "
                        f"n_test={n_test}, got {n_dev!r}")
    ids = sorted(wav, key=lambda u: u.encode())
    test = set(evenly_spaced(ids, n_test))
    rest = [u for u in ids if u not in test]
    dev = set(evenly_spaced(rest, n_dev)) if n_dev else set()
    result = {}
    for name, utts in (("train", [u for u in rest if u not in dev]), ("dev", [u for u in rest if u in dev]),
                       ("test_id", [u for u in ids if u in test])):
        if not utts:
            continue
        result[name] = write_data_dir(Path(out_dir) / name, {u: wav[u] for u in utts}, {u: text[u] for u in utts},
                                      {u: "LJ" for u in utts})
        logger.info("ljspeech %s: %d utterances -> %s", name, len(utts), result[name])
    return result
