"""Phone transcripts of a data dir's text from speechocean762's resource files.

``resource/text-phone`` gives each word of each utterance its canonical phones
(``<utt>.<word index>\tK_B AO0_I L_E``, Kaldi position suffixes); words it lacks (or
utterances whose word count differs, e.g. other corpora) go through ``resource/lexicon.txt``
(first pronunciation). Speed-perturbed ids (``sp0.9-<utt>``) use their source utterance.
Phones lose the position suffix and, by default, the stress digit (39 ARPAbet phones).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional

from softtok.tokenizers.datadir import DataError, read_kaldi_map, write_kaldi_map

logger = logging.getLogger(__name__)

_SUFFIX = re.compile(r"_[BIES]$")
_STRESS = re.compile(r"[0-9]$")
_SPEED_PREFIX = re.compile(r"^sp[0-9.]+-")


def clean_phone(phone: str, keep_stress: bool = False) -> str:
    """``AO0_I`` -> ``AO`` (or ``AO0`` with ``keep_stress``)."""
    phone = _SUFFIX.sub("", phone)
    return phone if keep_stress else _STRESS.sub("", phone)


def source_utt(utt: str) -> str:
    """The utterance a speed-perturbed copy came from (``sp1.1-000010011`` -> ``000010011``)."""
    return _SPEED_PREFIX.sub("", utt)


def read_text_phone(path: Path, keep_stress: bool = False) -> Dict[str, List[List[str]]]:
    """utt -> phones of each word, in word order, from a ``<utt>.<i> phones...`` file."""
    words: Dict[str, Dict[int, List[str]]] = {}
    for key, value in read_kaldi_map(path, require_sorted=False).items():
        utt, _, index = key.rpartition(".")
        if not utt or not index.isdigit():
            raise DataError(f"{path}: key {key!r} is not <utt>.<word index>")
        words.setdefault(utt, {})[int(index)] = [clean_phone(p, keep_stress) for p in value.split()]
    return {utt: [w[i] for i in sorted(w)] for utt, w in words.items()}


def read_lexicon(path: Path, keep_stress: bool = False) -> Dict[str, List[str]]:
    """WORD -> phones of its first pronunciation."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    lexicon: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}: expected WORD PHONE..., got {line.strip()!r}")
            lexicon.setdefault(parts[0].upper(), [clean_phone(p, keep_stress) for p in parts[1:]])
    return lexicon


def phone_transcripts(text: Dict[str, str], text_phone: Optional[Dict[str, List[List[str]]]],
                      lexicon: Optional[Dict[str, List[str]]], lexicon_name: str = "lexicon") -> Dict[str, str]:
    """utt -> space-separated phones: text-phone's words where they match the transcript, else the lexicon's."""
    out, from_lexicon = {}, 0
    for utt, sentence in text.items():
        words = sentence.upper().split()
        known = (text_phone or {}).get(source_utt(utt))
        if known is None or len(known) != len(words):
            from_lexicon += 1
            known = [_lookup(lexicon, w, utt, lexicon_name) for w in words]
        out[utt] = " ".join(p for word in known for p in word)
    if from_lexicon:
        logger.info("%d of %d utterances phonetised with the lexicon", from_lexicon, len(text))
    return out


def _lookup(lexicon: Optional[Dict[str, List[str]]], word: str, utt: str, lexicon_name: str) -> List[str]:
    if lexicon is None or word not in lexicon:
        raise DataError(f"{lexicon_name}: no pronunciation for word {word!r} (utterance {utt})")
    return lexicon[word]


def write_phone_text(text_path: str, out_path: str, text_phone_path: Optional[str] = None,
                     lexicon_path: Optional[str] = None, keep_stress: bool = False) -> Dict[str, int]:
    """Read a Kaldi ``text``, write its phone transcripts (``utt PH PH ...``) to ``out_path``."""
    if not text_phone_path and not lexicon_path:
        raise ValueError("phone-text needs --text-phone and/or --lexicon")
    text_phone = read_text_phone(Path(text_phone_path), keep_stress) if text_phone_path else None
    lexicon = read_lexicon(Path(lexicon_path), keep_stress) if lexicon_path else None
    phones = phone_transcripts(read_kaldi_map(Path(text_path)), text_phone, lexicon, str(lexicon_path))
    write_kaldi_map(out_path, phones)
    inventory = {p for line in phones.values() for p in line.split()}
    return {"utts": len(phones), "phones": len(inventory), "output": out_path}
