"""LibriSpeech (read audiobooks, CC BY 4.0): the subsets of the full-scale ASR recipe as Kaldi data dirs.

Texts keep the corpus's words (upper case, no punctuation); ``CHECKSUMS`` are the archives' SHA-256 digests as
torchaudio pins them for the same URLs (``torchaudio/datasets/librispeech.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Sequence, Tuple

from softtok.recipes.corpora.common import download, one_line, require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

CHECKSUMS = {
    "train-clean-100.tar.gz": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "dev-clean.tar.gz": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other.tar.gz": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean.tar.gz": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other.tar.gz": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
}
LIBRISPEECH_SUBSETS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")


def _set_name(name: str) -> str:
    """A data dir name from a corpus part name (``dev-clean`` -> ``dev_clean``)."""
    return name.replace("-", "_")


def _librispeech_root(corpus_dir: str | Path) -> Path:
    """The folder holding the subsets: ``corpus_dir`` itself or its ``LibriSpeech/`` child."""
    corpus = Path(corpus_dir).resolve()
    return corpus / "LibriSpeech" if (corpus / "LibriSpeech").is_dir() else corpus


def _librispeech_genders(corpus: Path) -> Dict[str, str]:
    """reader -> m/f from ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``, ';' comments), if present."""
    path = corpus / "SPEAKERS.TXT"
    if not path.is_file():
        return {}
    genders = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if line.startswith(";") or len(fields) < 2 or fields[1].upper() not in ("M", "F"):
            continue
        genders[fields[0]] = fields[1].lower()
    return genders


def _read_librispeech_subset(folder: Path) -> Tuple[Dict[str, str], Dict[str, str], Dict[str, str]]:
    """wav, text, utt2spk of one subset: every ``<reader>/<chapter>/<reader>-<chapter>.trans.txt`` line and its flac."""
    wav, text, utt2spk = {}, {}, {}
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        reader, chapter = trans.parent.parent.name, trans.parent.name
        if trans.name != f"{reader}-{chapter}.trans.txt":
            raise DataError(f"{trans}: expected the name {reader}-{chapter}.trans.txt in {trans.parent}")
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            utt = parts[0]
            if not utt.startswith(f"{reader}-{chapter}-") or len(parts) < 2:
                raise DataError(f"{trans}:{lineno}: expected '{reader}-{chapter}-<n> TEXT', got {line[:40]!r}")
            audio = trans.parent / f"{utt}.flac"
            if not audio.is_file():
                raise DataError(f"{audio}: audio of {utt!r} ({trans}:{lineno}) not found")
            wav[utt], text[utt], utt2spk[utt] = str(audio), one_line(parts[1]), reader
    if not wav:
        raise DataError(f"{folder}: no <reader>/<chapter>/<reader>-<chapter>.trans.txt; "
                        f"is this a librispeech subset? Download: {download('librispeech')}")
    return wav, text, utt2spk


def prepare_librispeech(corpus_dir: str | Path, out_dir: str | Path,
                        subsets: Sequence[str] = LIBRISPEECH_SUBSETS) -> Dict[str, Path]:
    """LibriSpeech subsets as ``train_clean_100``, ``dev_clean``, ... (speaker: the reader; spk2gender from
    SPEAKERS.TXT when present). ``corpus_dir`` is the unpacked ``LibriSpeech/`` folder or its parent."""
    corpus = _librispeech_root(corpus_dir)
    for subset in subsets:
        require_corpus_path(corpus / subset, "librispeech")
    parsed = {subset: _read_librispeech_subset(corpus / subset) for subset in subsets}
    genders = _librispeech_genders(corpus)
    result = {}
    for subset, (wav, text, utt2spk) in parsed.items():
        name = _set_name(subset)
        result[name] = write_data_dir(Path(out_dir) / name, wav, text, utt2spk,
                                      {"spk2gender": genders} if genders else None)
        logger.info("librispeech %s: %d utterances, %d readers -> %s", subset, len(wav), len(set(utt2spk.values())),
                    result[name])
    return result
