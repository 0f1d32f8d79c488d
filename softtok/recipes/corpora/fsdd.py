"""FSDD (Free Spoken Digit Dataset): spoken digits, one data dir with the digit words as text."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

from softtok.recipes.corpora.common import require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

DIGIT_WORDS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]


def prepare_fsdd(corpus_dir: str | Path, out_dir: str | Path) -> Dict[str, Path]:
    """All FSDD recordings as one data dir ``fsdd``: utt ``<speaker>_<digit>_<index>``, text the digit word."""
    corpus = Path(corpus_dir).resolve()
    require_corpus_path(corpus / "recordings", "fsdd")
    wav, text, utt2spk = {}, {}, {}
    for path in sorted((corpus / "recordings").iterdir()):
        parts = path.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise DataError(f"{path}: expected <digit>_<speaker>_<index>.<ext>")
        digit, speaker, index = parts
        utt = f"{speaker}_{digit}_{int(index):02d}"
        wav[utt], text[utt], utt2spk[utt] = str(path), DIGIT_WORDS[int(digit)], speaker
    if not wav:
        raise DataError(f"{corpus / 'recordings'}: no recordings")
    spk_files = {}
    if (corpus / "speakers.tsv").is_file():
        rows = [line.split("\t") for line in (corpus / "speakers.tsv").read_text().splitlines()[1:] if line]
        spk_files["spk2accent"] = {r[0]: r[2] for r in rows}
    dest = write_data_dir(Path(out_dir) / "fsdd", wav, text, utt2spk, spk_files)
    logger.info("fsdd: %d utterances -> %s", len(wav), dest)
    return {"fsdd": dest}
