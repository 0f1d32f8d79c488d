"""TIMIT (LDC93S1, licensed): its TEST part, less the SA dialect sentences, as the conversion source ``test_ood``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

from softtok.recipes.corpora.common import check_sphere, download, one_line
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

TIMIT_DIALECT_SENTENCES = ("SA1", "SA2")  # read by every speaker; excluded from test sets as usual


def _child(folder: Path, name: str) -> Optional[Path]:
    """The entry of ``folder`` called ``name`` in any case (TIMIT copies are upper or lower case)."""
    matches = sorted(p for p in folder.iterdir() if p.name.upper() == name.upper())
    return matches[0] if matches else None


def _timit_sentence(path: Path) -> str:
    """The sentence of a TIMIT ``.TXT`` file: ``<start sample> <end sample> <sentence>``."""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8/ASCII text") from None
    parts = content.split(maxsplit=2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[2].strip():
        raise DataError(f"{path}: expected '<start sample> <end sample> <sentence>'")
    return one_line(parts[2])


def _test_folder(corpus: Path) -> Path:
    """``corpus/TEST`` in any case, or a one-line error saying where TIMIT is to be had."""
    test = _child(corpus, "TEST") if corpus.is_dir() else None
    if test is None or not test.is_dir():
        missing = corpus / "TEST" if corpus.is_dir() else corpus
        raise DataError(f"{missing}: not found; is this a timit folder? Download: {download('timit')}")
    return test


def prepare_timit(corpus_dir: str | Path, out_dir: str | Path) -> Dict[str, Path]:
    """TIMIT's TEST part (all 168 speakers, SA1/SA2 dialect sentences skipped: 1,344 utterances) as ``test_ood``.

    Layout: ``TEST/DR1..DR8/<SPEAKER>/<UTT>.WAV`` + ``<UTT>.TXT`` (``<start> <end> <sentence>``); names may be
    upper or lower case. Utterance ids are ``<SPEAKER>_<UTT>`` and speakers the speaker folder, both upper case
    (``FADG0_SI1279``, speaker ``FADG0``); spk2gender comes from the folder's first letter (m/f). The text is the
    sentence as written (scoring normalises case and punctuation). wav.scp points to the original files:
    soundfile (libsndfile) reads the NIST SPHERE ``.WAV`` files of the LDC release as they are uncompressed; a
    shorten-compressed SPHERE copy cannot be read and is reported here, before anything is written.
    """
    test = _test_folder(Path(corpus_dir).resolve())
    wav, text, utt2spk, spk2gender = {}, {}, {}, {}
    regions = sorted((p for p in test.iterdir() if p.is_dir() and p.name.upper().startswith("DR")),
                     key=lambda p: p.name.upper())
    for region in regions:
        for spk_dir in sorted((p for p in region.iterdir() if p.is_dir()), key=lambda p: p.name.upper()):
            speaker = spk_dir.name.upper()
            for txt in sorted((p for p in spk_dir.iterdir() if p.suffix.upper() == ".TXT"),
                              key=lambda p: p.name.upper()):
                name = txt.stem.upper()
                if name in TIMIT_DIALECT_SENTENCES:
                    continue
                audio = next((p for p in sorted(spk_dir.iterdir()) if p.stem.upper() == name
                              and p.suffix.upper() == ".WAV"), None)
                if audio is None:
                    raise DataError(f"{txt}: no {txt.stem}.WAV beside it")
                check_sphere(audio)
                utt = f"{speaker}_{name}"
                if utt in wav:
                    raise DataError(f"{audio}: utterance {utt!r} occurs twice under {test}")
                wav[utt], text[utt], utt2spk[utt] = str(audio), _timit_sentence(txt), speaker
                if speaker[:1] in ("M", "F"):
                    spk2gender[speaker] = speaker[0].lower()
    if not wav:
        raise DataError(f"{test}: no utterances (expected DR1..DR8/<speaker>/<utt>.WAV + .TXT)")
    dest = write_data_dir(Path(out_dir) / "test_ood", wav, text, utt2spk,
                          {"spk2gender": spk2gender} if spk2gender else None)
    logger.info("timit TEST: %d utterances of %d speakers -> %s", len(wav), len(set(utt2spk.values())), dest)
    return {"test_ood": dest}
