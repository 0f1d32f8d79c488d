"""Corpora of the full-scale ASR recipe: LibriSpeech, TED-LIUM 2, CHiME-4, L2-ARCTIC and ERJ -> Kaldi data dirs.

Like :mod:`softtok.recipes.corpora`, every ``prepare_<corpus>(corpus_dir, out_dir, ...)`` reads and checks the
whole layout before writing anything (one-line :class:`DataError` naming the missing file and where to get the
corpus), writes absolute audio paths and returns ``{set_name: data_dir}``. Download locations are in
``corpora.URLS``; ``CHECKSUMS`` holds the archive SHA-256 digests that torchaudio pins for the same URLs (the only
published digests we found; none are published for CHiME-4, L2-ARCTIC or ERJ).

Texts keep their words as the corpus writes them, less the markers a recogniser cannot produce (noise tags,
``<unk>``, pronunciation-variant numbers); case and punctuation are left to the scorer's normaliser.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import soundfile as sf

from softtok.recipes.corpora import URLS, require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

CHECKSUMS = {  # sha256 of the archives, as torchaudio.datasets pins them (librispeech.py, tedlium.py, ljspeech.py)
    "train-clean-100.tar.gz": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "dev-clean.tar.gz": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other.tar.gz": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean.tar.gz": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other.tar.gz": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "TEDLIUM_release2.tar.gz": "93281b5fcaaae5c88671c9d000b443cb3c7ea3499ad12010b3934ca41a7b9c58",
    "LJSpeech-1.1.tar.bz2": "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5",
}

LIBRISPEECH_SUBSETS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")
TEDLIUM_IGNORE = "ignore_time_segment_in_scoring"
CHIME4_ENVIRONMENTS = ("bus", "caf", "ped", "str")
# L2-ARCTIC v5.0: speaker -> (first language, gender), as the corpus README lists them (24 speakers)
L2ARCTIC_SPEAKERS = {
    "ABA": ("arabic", "m"), "SKA": ("arabic", "f"), "YBAA": ("arabic", "m"), "ZHAA": ("arabic", "f"),
    "BWC": ("mandarin", "m"), "LXC": ("mandarin", "f"), "NCC": ("mandarin", "f"), "TXHC": ("mandarin", "m"),
    "ASI": ("hindi", "m"), "RRBI": ("hindi", "m"), "SVBI": ("hindi", "f"), "TNI": ("hindi", "f"),
    "HJK": ("korean", "f"), "HKK": ("korean", "m"), "YDCK": ("korean", "f"), "YKWK": ("korean", "m"),
    "EBVS": ("spanish", "m"), "ERMS": ("spanish", "m"), "MBMPS": ("spanish", "f"), "NJS": ("spanish", "f"),
    "HQTV": ("vietnamese", "m"), "PNV": ("vietnamese", "f"), "THV": ("vietnamese", "f"), "TLV": ("vietnamese", "m"),
}
ERJ_MANIFEST = "softtok_erj.tsv"


def _set_name(name: str) -> str:
    """A data dir name from a corpus part name (``dev-clean`` -> ``dev_clean``)."""
    return name.replace("-", "_")


def _words(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------- LibriSpeech


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
            wav[utt], text[utt], utt2spk[utt] = str(audio), _words(parts[1]), reader
    if not wav:
        raise DataError(f"{folder}: no <reader>/<chapter>/<reader>-<chapter>.trans.txt; "
                        f"is this a librispeech subset? Download: {URLS['librispeech']}")
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


# ----------------------------------------------------------------------------- TED-LIUM 2


def check_sphere(path: Path) -> "sf._SoundFileInfo":
    """soundfile's info (frames, sample rate) of a NIST SPHERE (or any soundfile-readable) file; shorten-compressed SPHERE is refused.

    libsndfile reads uncompressed SPHERE (``sample_coding -s3 pcm``) as it is; the ``embedded-shorten`` coding of
    some LDC releases it cannot decode, and that needs ``sph2pipe -f wav`` first.
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.startswith(b"NIST_1A") and b"shorten" in head.split(b"end_head")[0]:
        raise DataError(f"{path}: shorten-compressed NIST SPHERE, which soundfile cannot read; convert it first "
                        f"(sph2pipe -f wav IN.sph OUT.wav, from the SPHERE tools / Kaldi's tools/sph2pipe)")
    try:
        return sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError
        raise DataError(f"{path}: soundfile cannot read it ({str(exc).splitlines()[0]}); if it is compressed "
                        f"SPHERE, convert it with sph2pipe -f wav") from None


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
        raise DataError(f"{folder / 'stm'}: no .stm files; is this a tedlium2 split? Download: {URLS['tedlium2']}")
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


# ----------------------------------------------------------------------------- CHiME-4


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
            raise DataError(f"{folder}: no .wav files; is this a chime4 folder? Download: {URLS['chime4']}")
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


# ----------------------------------------------------------------------------- L2-ARCTIC


def _l2arctic_speaker(corpus: Path, speaker: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """wav, text of one speaker: ``<SPK>/wav/<utt>.wav`` with ``<SPK>/transcript/<utt>.txt`` (one line)."""
    wav, text = {}, {}
    for audio in sorted((corpus / speaker / "wav").glob("*.wav")):
        txt = corpus / speaker / "transcript" / f"{audio.stem}.txt"
        if not txt.is_file():
            raise DataError(f"{txt}: transcript of {audio} not found")
        words = _words(txt.read_text(encoding="utf-8", errors="replace"))
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
    ``python -m softtok.recipes.sets split-attribute --file spk2l1``.
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


# ----------------------------------------------------------------------------- ERJ


def prepare_erj(corpus_dir: str | Path, out_dir: str | Path) -> Dict[str, Path]:
    """ERJ (English Read by Japanese) sentences as ``erj``, from a manifest the user writes.

    The ERJ CD-ROM's own file layout and sentence-list format are not publicly documented (the sentence lists
    ship as PDFs under ``doc/``), so no layout is guessed. Write ``<corpus_dir>/softtok_erj.tsv`` with one line
    per utterance: ``utt_id<TAB>speaker<TAB>audio path (relative to corpus_dir, or absolute)<TAB>sentence``
    (optional fifth column: gender m/f). Lines starting with ``#`` are comments.
    """
    corpus = Path(corpus_dir).resolve()
    manifest = corpus / ERJ_MANIFEST
    require_corpus_path(manifest, "erj")
    wav, text, utt2spk, genders = {}, {}, {}, {}
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) not in (4, 5) or not all(f.strip() for f in fields[:4]):
            raise DataError(f"{manifest}:{lineno}: expected utt_id<TAB>speaker<TAB>audio<TAB>sentence[<TAB>m|f]")
        utt, speaker, audio, sentence = (f.strip() for f in fields[:4])
        path = (corpus / audio).resolve()
        if not path.is_file():
            raise DataError(f"{path}: audio of {utt!r} ({manifest}:{lineno}) not found")
        if utt in wav:
            raise DataError(f"{manifest}:{lineno}: duplicate utterance id {utt!r}")
        wav[utt], text[utt], utt2spk[utt] = str(path), _words(sentence), speaker
        if len(fields) == 5 and fields[4].strip().lower() in ("m", "f"):
            genders[speaker] = fields[4].strip().lower()
    if not wav:
        raise DataError(f"{manifest}: no utterances")
    dest = write_data_dir(Path(out_dir) / "erj", wav, text, utt2spk, {"spk2gender": genders} if genders else None)
    logger.info("erj: %d utterances of %d speakers -> %s", len(wav), len(set(utt2spk.values())), dest)
    return {"erj": dest}


PREPARERS = {
    "librispeech": prepare_librispeech,
    "tedlium2": prepare_tedlium2,
    "chime4": prepare_chime4,
    "l2arctic": prepare_l2arctic,
    "erj": prepare_erj,
}
