"""L2-ARCTIC v5.0 (ARCTIC prompts read by 24 non-native speakers, six first languages): one data dir with spk2l1.

No checksums are published for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

from softtok.recipes.corpora.common import one_line, require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

# speaker -> (first language, gender), as the corpus README lists them (24 speakers)
L2ARCTIC_SPEAKERS = {
    "ABA": ("arabic", "m"), "SKA": ("arabic", "f"), "YBAA": ("arabic", "m"), "ZHAA": ("arabic", "f"),
    "BWC": ("mandarin", "m"), "LXC": ("mandarin", "f"), "NCC": ("mandarin", "f"), "TXHC": ("mandarin", "m"),
    "ASI": ("hindi", "m"), "RRBI": ("hindi", "m"), "SVBI": ("hindi", "f"), "TNI": ("hindi", "f"),
    "HJK": ("korean", "f"), "HKK": ("korean", "m"), "YDCK": ("korean", "f"), "YKWK": ("korean", "m"),
    "EBVS": ("spanish", "m"), "ERMS": ("spanish", "m"), "MBMPS": ("spanish", "f"), "NJS": ("spanish", "f"),
    "HQTV": ("vietnamese", "m"), "PNV": ("vietnamese", "f"), "THV": ("vietnamese", "f"), "TLV": ("vietnamese", "m"),
}


def _l2arctic_speaker(corpus: Path, speaker: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """wav, text of one speaker: ``<SPK>/wav/<utt>.wav`` with ``<SPK>/transcript/<utt>.txt`` (one line)."""
    wav, text = {}, {}
    for audio in sorted((corpus / speaker / "wav").glob("*.wav")):
        txt = corpus / speaker / "transcript" / f"{audio.stem}.txt"
        if not txt.is_file():
            raise DataError(f"{txt}: transcript of {audio} not found")
        words = one_line(txt.read_text(encoding="utf-8", errors="replace"))
        if not words:
            raise DataError(f"{txt}: empty transcript")
        utt = f"{speaker}_{audio.stem}"
        wav[utt], text[utt] = str(audio), words
    if not wav:
        raise DataError(f"{corpus / speaker / 'wav'}: no .wav files")
    return wav, text


def prepare_l2arctic(corpus_dir: str | Path, out_dir: str | Path,
                     speakers: Optional[Iterable[str]] = None) -> Dict[str, Path]:
    """L2-ARCTIC's scripted speech (default: all 24 speakers) as one set ``l2arctic`` with spk2l1 and spk2gender.

    Layout (v5.0): ``<SPK>/wav/arctic_a0001.wav`` + ``<SPK>/transcript/arctic_a0001.txt``; utterance ids are
    ``<SPK>_arctic_a0001``. The suitcase (spontaneous) part is not used. Per-L1 sets:
    ``softtok sets split-attribute --file spk2l1``.
    """
    corpus = Path(corpus_dir).resolve()
    chosen = sorted(speakers) if speakers is not None else sorted(L2ARCTIC_SPEAKERS)
    for speaker in chosen:
        if speaker not in L2ARCTIC_SPEAKERS:
            raise DataError(f"unknown L2-ARCTIC speaker {speaker!r} (known: {', '.join(sorted(L2ARCTIC_SPEAKERS))})")
        require_corpus_path(corpus / speaker / "wav", "l2arctic")
        require_corpus_path(corpus / speaker / "transcript", "l2arctic")
    wav, text, utt2spk = {}, {}, {}
    for speaker in chosen:
        spk_wav, spk_text = _l2arctic_speaker(corpus, speaker)
        wav.update(spk_wav)
        text.update(spk_text)
        utt2spk.update({u: speaker for u in spk_wav})
    spk_files = {"spk2l1": {s: L2ARCTIC_SPEAKERS[s][0] for s in chosen},
                 "spk2gender": {s: L2ARCTIC_SPEAKERS[s][1] for s in chosen}}
    dest = write_data_dir(Path(out_dir) / "l2arctic", wav, text, utt2spk, spk_files)
    logger.info("l2arctic: %d utterances of %d speakers -> %s", len(wav), len(chosen), dest)
    return {"l2arctic": dest}
