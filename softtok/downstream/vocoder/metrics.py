"""Objective metrics of a unit vocoder (resynthesis, voice conversion) on 16 kHz mono waveforms.

* :func:`mel_cepstral_distortion` -- MCD (dB) between WORLD mel-cepstra, c0 excluded, frames aligned by DTW.
  Mel-cepstrum: the WORLD (CheapTrick) power envelope P goes to the real cepstrum ``c = irfft(log P)``
  (c0 and the Nyquist term halved: the minimum-phase cepstrum of |H| with P = |H|^2, SPTK's convention),
  then SPTK's ``freqt`` recursion warps it with the first-order all-pass of ``alpha`` (0.42 for 16 kHz),
  i.e. pysptk's ``sp2mc``. ``freqt`` is linear, so it is applied as a cached matrix.
  Silence: frames more than ``silence_db`` below the loudest frame of *their own* signal are dropped
  before DTW (voicing is not used: unvoiced consonants count). DTW minimises the summed Euclidean
  distance of the mel-cepstra (c1..) with steps (1,1), (1,0), (0,1); MCD is the mean over the path.
* :func:`f0_metrics` -- F0 RMSE (Hz) and log-F0 Pearson correlation over frames voiced in both, and the
  voicing-decision error rate; WORLD Harvest at 10 ms. Frames are compared *in time* (no DTW): a vocoder
  keeps the frame rate, so input and output differ by at most a few frames, which are cut off the end.
* :func:`world_features` -- F0, mel-cepstra and frame energies from one F0 analysis, for evaluating many
  outputs against one reference (:func:`mcd_of_features`, :func:`compare_f0`) without re-analysing it.
* :func:`log_mel_distance` -- mean absolute log-mel difference, frame by frame (a cheap spectral distance).
* :class:`SpeakerSimilarity` -- cosine similarity of Resemblyzer utterance embeddings (optional package).
* :func:`paired_mean_difference` -- paired bootstrap interval of a per-utterance metric's mean difference.
* :class:`JudgeASR` -- Whisper tiny.en (CTranslate2) transcripts and WER/CER of the resynthesised speech.

Bad input (empty, stereo/2-D, NaN, a sample rate other than 16 kHz) is one ``ValueError`` line.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from softtok.downstream.scoring import score
from softtok.downstream.stats import paired_bootstrap_interval
from softtok.tokenizers.features.whisper import MAX_MEL_FRAMES, default_whisper_model, log_mel_spectrogram

logger = logging.getLogger(__name__)

Wave = Union[np.ndarray, torch.Tensor]
SAMPLE_RATE = 16000
FRAME_PERIOD_MS = 10.0
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)  # dB per unit of Euclidean mel-cepstral distance
WHISPER_SAMPLES = 30 * SAMPLE_RATE


def check_wave(wave: Wave, name: str = "waveform", sr: int = SAMPLE_RATE) -> np.ndarray:
    """Validate a mono 16 kHz waveform (numpy or torch, 1-D) and return it as contiguous float64."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"{name}: sample rate must be {SAMPLE_RATE} Hz, got {sr}; resample it first")
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"{name}: expected a mono 1-D waveform, got shape {tuple(wave.shape)}")
    if wave.size == 0:
        raise ValueError(f"{name}: empty waveform")
    if not np.issubdtype(wave.dtype, np.number) or np.iscomplexobj(wave):
        raise ValueError(f"{name}: expected real float samples, got dtype {wave.dtype}")
    if not np.isfinite(wave).all():
        raise ValueError(f"{name}: waveform contains NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float64)


# ----------------------------------------------------------------------------------------------- WORLD

def extract_f0(wave: Wave, sr: int = SAMPLE_RATE, method: str = "harvest") -> np.ndarray:
    """F0 in Hz every 10 ms (0 = unvoiced) with WORLD Harvest, or DIO refined by StoneMask (faster)."""
    import pyworld

    x = check_wave(wave, "wave", sr)
    if method == "harvest":
        f0, _ = pyworld.harvest(x, sr, frame_period=FRAME_PERIOD_MS)
    elif method == "dio":
        f0, times = pyworld.dio(x, sr, frame_period=FRAME_PERIOD_MS)
        f0 = pyworld.stonemask(x, f0, times, sr)
    else:
        raise ValueError(f"f0 method must be 'harvest' or 'dio', got {method!r}")
    return f0


def spectral_envelope(wave: Wave, sr: int = SAMPLE_RATE, f0_method: str = "harvest") -> np.ndarray:
    """WORLD CheapTrick power envelope (frames, fft_size/2 + 1) every 10 ms, F0-adaptive."""
    import pyworld

    x = check_wave(wave, "wave", sr)
    f0 = extract_f0(x, sr, f0_method)
    times = np.arange(len(f0)) * FRAME_PERIOD_MS / 1000.0
    return pyworld.cheaptrick(x, f0, times, sr)


@functools.lru_cache(maxsize=8)
def freqt_matrix(in_order: int, out_order: int, alpha: float) -> np.ndarray:
    """SPTK's ``freqt`` recursion as a (in_order+1, out_order+1) matrix: ``warped = cep @ matrix``.

    It re-expands a cepstrum on the frequency axis warped by the all-pass (z^-1 - alpha)/(1 - alpha z^-1).
    """
    beta = 1.0 - alpha * alpha
    basis = np.eye(in_order + 1)
    g = np.zeros((in_order + 1, out_order + 1))
    for i in range(in_order, -1, -1):  # feed c[m1], ..., c[0]
        d = g.copy()
        g[:, 0] = basis[:, i] + alpha * d[:, 0]
        if out_order >= 1:
            g[:, 1] = beta * d[:, 0] + alpha * d[:, 1]
        for j in range(2, out_order + 1):
            g[:, j] = d[:, j - 1] + alpha * (d[:, j] - g[:, j - 1])
    g.setflags(write=False)
    return g


def envelope_to_mcep(power: np.ndarray, order: int = 24, alpha: float = 0.42) -> np.ndarray:
    """Mel-cepstra (frames, order+1) of power envelopes (frames, n_fft/2+1): pysptk ``sp2mc``."""
    power = np.atleast_2d(power)
    n_fft = 2 * (power.shape[1] - 1)
    cep = np.fft.irfft(np.log(np.maximum(power, 1e-300)), n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    cep[:, 0] /= 2.0
    cep[:, -1] /= 2.0
    return cep @ freqt_matrix(n_fft // 2, order, float(alpha))


def mel_cepstrum(wave: Wave, sr: int = SAMPLE_RATE, order: int = 24, alpha: float = 0.42,
                 f0_method: str = "harvest") -> Tuple[np.ndarray, np.ndarray]:
    """WORLD mel-cepstra (frames, order+1) and frame energies in dB (frames,) every 10 ms."""
    power = spectral_envelope(wave, sr, f0_method)
    return envelope_to_mcep(power, order, alpha), _energy_db(power)


def _energy_db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power.sum(axis=1), 1e-30))


@dataclass
class WorldFeatures:
    """One waveform's WORLD analysis every 10 ms: F0 (Hz, 0 = unvoiced), mel-cepstra, frame energies (dB)."""

    f0: np.ndarray
    mcep: np.ndarray
    energy_db: np.ndarray


def world_features(wave: Wave, sr: int = SAMPLE_RATE, order: int = 24, alpha: float = 0.42,
                   f0_method: str = "harvest") -> WorldFeatures:
    """F0, mel-cepstra and energies from a single F0 analysis (what MCD and the F0 metrics each redo)."""
    import pyworld

    x = check_wave(wave, "wave", sr)
    f0 = extract_f0(x, sr, f0_method)
    power = pyworld.cheaptrick(x, f0, np.arange(len(f0)) * FRAME_PERIOD_MS / 1000.0, sr)
    return WorldFeatures(f0, envelope_to_mcep(power, order, alpha), _energy_db(power))


# ------------------------------------------------------------------------------------------------- DTW

def euclidean_cost(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances (len(x), len(y)) of two frame sequences (frames, dim)."""
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def dtw(cost: np.ndarray) -> Tuple[float, np.ndarray]:
    """Minimal summed cost and path ((L, 2) index pairs) from (0, 0) to the last cell; steps (1,1), (1,0), (0,1).

    Each row is solved in closed form: D[i, j] = C[j] + min_{k<=j}(a[k] - C[k-1]), with C the
    cumulative row cost and a[k] = min(D[i-1, k-1], D[i-1, k]); backtracking prefers the diagonal.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.size == 0:
        raise ValueError(f"DTW needs a non-empty 2-D cost matrix, got shape {cost.shape}")
    n, m = cost.shape
    acc = np.empty((n, m))
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        prev = acc[i - 1]
        best_in = np.concatenate(([prev[0]], np.minimum(prev[1:], prev[:-1])))
        cum = np.cumsum(cost[i])
        acc[i] = cum + np.minimum.accumulate(best_in - np.concatenate(([0.0], cum[:-1])))
    i, j, path = n - 1, m - 1, [(n - 1, m - 1)]
    while i > 0 or j > 0:
        if i == 0 or j == 0:
            i, j = (i, j - 1) if i == 0 else (i - 1, j)
        else:
            step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = ((i - 1, j - 1), (i - 1, j), (i, j - 1))[step]
        path.append((i, j))
    return float(acc[-1, -1]), np.array(path[::-1], dtype=np.int64)


# ------------------------------------------------------------------------------------------------- MCD

@dataclass
class MCDResult:
    """Mean MCD in dB over the aligned frame pairs, the DTW path length and the frames compared."""

    mcd_db: float
    path_length: int
    n_ref_frames: int
    n_syn_frames: int


def cepstral_distortion(ref_mcep: np.ndarray, syn_mcep: np.ndarray, align: bool = True) -> MCDResult:
    """MCD core on mel-cepstra (frames, order+1): c0 dropped, DTW-aligned (or frame by frame), mean over pairs."""
    ref, syn = np.asarray(ref_mcep, dtype=np.float64), np.asarray(syn_mcep, dtype=np.float64)
    if ref.ndim != 2 or syn.ndim != 2 or ref.shape[1] != syn.shape[1] or ref.shape[1] < 2:
        raise ValueError(f"mel-cepstra must be (frames, order+1) with the same order >= 1, "
                         f"got {ref.shape} and {syn.shape}")
    if len(ref) == 0 or len(syn) == 0:
        raise ValueError(f"no frames to compare ({len(ref)} reference, {len(syn)} synthesised)")
    ref, syn = ref[:, 1:], syn[:, 1:]
    if align:
        _, path = dtw(euclidean_cost(ref, syn))
    elif len(ref) != len(syn):
        raise ValueError(f"align=False needs equal frame counts, got {len(ref)} and {len(syn)}")
    else:
        path = np.stack([np.arange(len(ref))] * 2, axis=1)
    dist = np.sqrt(((ref[path[:, 0]] - syn[path[:, 1]]) ** 2).sum(axis=1))
    return MCDResult(float(MCD_SCALE * dist.mean()), len(path), len(ref), len(syn))


def _speech_frames(energy_db: np.ndarray, silence_db: Optional[float]) -> np.ndarray:
    """Boolean mask of frames within ``silence_db`` of the loudest frame (all frames if None)."""
    if silence_db is None:
        return np.ones(len(energy_db), dtype=bool)
    return energy_db >= energy_db.max() - silence_db


def mel_cepstral_distortion(ref: Wave, syn: Wave, sr: int = SAMPLE_RATE, order: int = 24, alpha: float = 0.42,
                            silence_db: Optional[float] = 40.0, f0_method: str = "harvest") -> MCDResult:
    """MCD (dB) of ``syn`` against ``ref``: WORLD mel-cepstra c1..c_order, silence dropped, DTW-aligned."""
    ref_w, syn_w = check_wave(ref, "ref", sr), check_wave(syn, "syn", sr)
    ref_mc, ref_db = mel_cepstrum(ref_w, sr, order, alpha, f0_method)
    syn_mc, syn_db = mel_cepstrum(syn_w, sr, order, alpha, f0_method)
    return _mcd_speech(ref_mc, ref_db, syn_mc, syn_db, silence_db)


def mcd_of_features(ref: WorldFeatures, syn: WorldFeatures, silence_db: Optional[float] = 40.0) -> MCDResult:
    """:func:`mel_cepstral_distortion` on analyses made by :func:`world_features` (same result, no re-analysis)."""
    return _mcd_speech(ref.mcep, ref.energy_db, syn.mcep, syn.energy_db, silence_db)


def _mcd_speech(ref_mc: np.ndarray, ref_db: np.ndarray, syn_mc: np.ndarray, syn_db: np.ndarray,
                silence_db: Optional[float]) -> MCDResult:
    ref_keep, syn_keep = _speech_frames(ref_db, silence_db), _speech_frames(syn_db, silence_db)
    logger.debug("MCD: keeping %d/%d reference and %d/%d synthesised frames above the silence threshold",
                 ref_keep.sum(), len(ref_keep), syn_keep.sum(), len(syn_keep))
    return cepstral_distortion(ref_mc[ref_keep], syn_mc[syn_keep])


def log_mel_distance(ref: Wave, syn: Wave, sr: int = SAMPLE_RATE, max_len_diff: int = 5) -> float:
    """Mean |log-mel(ref) − log-mel(syn)| (the mel vocoder's 80-bin log-mel), frame by frame in time.

    Like the F0 metrics it needs outputs of the input's duration: up to ``max_len_diff`` extra 10 ms frames at
    the end of either are cut off.
    """
    from softtok.downstream.vocoder.mel import log_mel

    a = log_mel(check_wave(ref, "ref", sr).astype(np.float32), sr)
    b = log_mel(check_wave(syn, "syn", sr).astype(np.float32), sr)
    if abs(len(a) - len(b)) > max_len_diff:
        raise ValueError(f"log-mels differ by {abs(len(a) - len(b))} frames (> {max_len_diff}); "
                         f"the distance compares frames in time and needs inputs of the same duration")
    n = min(len(a), len(b))
    return float((a[:n] - b[:n]).abs().mean())


# -------------------------------------------------------------------------------------------------- F0

def compare_f0(ref_f0: np.ndarray, syn_f0: np.ndarray, max_len_diff: int = 5) -> Dict[str, float]:
    """F0 RMSE (Hz), log-F0 Pearson correlation (voiced in both) and V/UV error of two F0 tracks (0 = unvoiced).

    Tracks are compared frame by frame; up to ``max_len_diff`` extra frames at the end of either are cut off.
    """
    ref_f0, syn_f0 = np.asarray(ref_f0, dtype=np.float64), np.asarray(syn_f0, dtype=np.float64)
    if abs(len(ref_f0) - len(syn_f0)) > max_len_diff:
        raise ValueError(f"F0 tracks differ by {abs(len(ref_f0) - len(syn_f0))} frames (> {max_len_diff}); "
                         f"F0 metrics compare frames in time and need inputs of the same duration")
    n = min(len(ref_f0), len(syn_f0))
    if n == 0:
        raise ValueError("no F0 frames to compare")
    ref_v, syn_v = ref_f0[:n] > 0, syn_f0[:n] > 0
    both = ref_v & syn_v
    out = {"f0_rmse_hz": math.nan, "f0_corr": math.nan, "vuv_error": float(np.mean(ref_v != syn_v)),
           "n_frames": n, "n_voiced_both": int(both.sum())}
    if not both.any():
        logger.warning("no frame is voiced in both signals: F0 RMSE and correlation are undefined (NaN)")
        return out
    a, b = ref_f0[:n][both], syn_f0[:n][both]
    out["f0_rmse_hz"] = float(np.sqrt(np.mean((a - b) ** 2)))
    la, lb = np.log(a), np.log(b)
    if both.sum() >= 2 and la.std() > 0 and lb.std() > 0:
        out["f0_corr"] = float(np.corrcoef(la, lb)[0, 1])
    return out


def f0_metrics(ref: Wave, syn: Wave, sr: int = SAMPLE_RATE, method: str = "harvest",
               max_len_diff: int = 5) -> Dict[str, float]:
    """F0 RMSE (Hz), log-F0 correlation and V/UV error of ``syn`` against ``ref``, frame by frame at 10 ms."""
    ref_w, syn_w = check_wave(ref, "ref", sr), check_wave(syn, "syn", sr)
    return compare_f0(extract_f0(ref_w, sr, method), extract_f0(syn_w, sr, method), max_len_diff)


# --------------------------------------------------------------------------------------------- speaker

def cosine_similarity(a: Wave, b: Wave) -> float:
    """Cosine of the angle between two non-zero 1-D embeddings of the same size."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"cosine similarity needs two non-empty 1-D vectors of equal size, "
                         f"got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("cosine similarity: embedding contains NaN or infinite values")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if norm == 0:
        raise ValueError("cosine similarity is undefined for a zero vector")
    return float(np.clip(a @ b / norm, -1.0, 1.0))


class SpeakerSimilarity:
    """Speaker similarity of two utterances: cosine of Resemblyzer d-vectors (GE2E, 256-dim), loaded lazily."""

    def __init__(self, device: Optional[str] = None):
        self.device = device
        self._encoder = None

    @property
    def encoder(self):
        """The Resemblyzer ``VoiceEncoder``, loaded on first use."""
        if self._encoder is None:
            try:
                from resemblyzer import VoiceEncoder
            except ImportError:
                raise ImportError("SpeakerSimilarity needs resemblyzer: `pip install softtok[vocoder]`") from None
            self._encoder = VoiceEncoder(device=self.device, verbose=False)
        return self._encoder

    def embed(self, wave: Wave, sr: int = SAMPLE_RATE) -> np.ndarray:
        """L2-normalised utterance embedding (volume-normalised, long silences trimmed by Resemblyzer)."""
        encoder = self.encoder  # first: a missing package is the one-line ImportError
        from resemblyzer import preprocess_wav

        x = preprocess_wav(check_wave(wave, "wave", sr).astype(np.float32), source_sr=sr)
        if x.size == 0:
            raise ValueError("wave: no speech left after Resemblyzer's silence trimming")
        return np.asarray(encoder.embed_utterance(x))

    def __call__(self, ref: Wave, syn: Wave, sr: int = SAMPLE_RATE) -> float:
        """Cosine similarity of the speaker embeddings of ``ref`` and ``syn``."""
        return cosine_similarity(self.embed(ref, sr), self.embed(syn, sr))


def paired_mean_difference(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000, seed: int = 0,
                           confidence: float = 0.95) -> Dict[str, float]:
    """Paired bootstrap over utterances of mean(b − a) for a per-utterance metric (NaN pairs dropped).

    Returns ``delta`` (observed mean difference), the percentile interval ``ci_low``/``ci_high``, and
    ``p_lower``: the fraction of resamples with delta < 0 (b lower than a).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    diff = (b - a)[np.isfinite(a) & np.isfinite(b)]
    if diff.size == 0:
        raise ValueError("no utterance has a finite value in both systems")
    ci = paired_bootstrap_interval(diff.size, lambda idx: diff[idx].mean(axis=1), n_resamples, seed, confidence)
    return {"delta": float(diff.mean()), "ci_low": ci.low, "ci_high": ci.high,
            "p_lower": ci.p_below_zero, "n_resamples": int(n_resamples), "n_utts": int(diff.size),
            "confidence": float(confidence)}


# ----------------------------------------------------------------------------------------------- judge

@functools.lru_cache(maxsize=1)
def _byte_decoder() -> Dict[str, int]:
    """GPT-2 byte-level BPE: printable stand-in character -> byte (inverse of ``bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, extra = list(bs), 0
    for byte in range(256):
        if byte not in bs:
            bs.append(byte)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): byte for byte, c in zip(bs, cs)}


class VocabularyDecoder:
    """Ids -> text with the model dir's ``vocabulary.txt`` (line n = id n-1), when ``tokenizers`` is missing."""

    def __init__(self, path: Union[str, Path]):
        self.tokens = Path(path).read_text(encoding="utf-8").split("\n")
        if self.tokens and self.tokens[-1] == "":
            self.tokens.pop()

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Join byte-level BPE pieces, drop ``<|...|>`` specials, and decode the bytes as UTF-8."""
        table = _byte_decoder()
        pieces = [self.tokens[i] for i in ids]
        if skip_special_tokens:
            pieces = [p for p in pieces if not (p.startswith("<|") and p.endswith("|>"))]
        return bytes(table[ch] for ch in "".join(pieces)).decode("utf-8", errors="replace")


def load_whisper_decoder(model_dir: Union[str, Path]):
    """The model's ``tokenizer.json`` via ``tokenizers`` if installed, else a :class:`VocabularyDecoder`."""
    model_dir = Path(model_dir)
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    if tokenizers is not None and (model_dir / "tokenizer.json").is_file():
        return tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    if not (model_dir / "vocabulary.txt").is_file():
        raise FileNotFoundError(f"{model_dir}: neither tokenizer.json (with `tokenizers`) nor vocabulary.txt")
    return VocabularyDecoder(model_dir / "vocabulary.txt")


def whisper_features(wave: Wave, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Whisper's (80, 3000) log-mel input: the waveform zero-padded to 30 s (longer is an error)."""
    x = check_wave(wave, "wave", sr)
    if len(x) > WHISPER_SAMPLES:
        raise ValueError(f"wave: {len(x) / sr:.1f} s is longer than Whisper's 30 s window; segment it first")
    padded = torch.zeros(WHISPER_SAMPLES)
    padded[: len(x)] = torch.from_numpy(x).float()
    mel = log_mel_spectrogram(padded)[:, :MAX_MEL_FRAMES]
    return np.ascontiguousarray(mel.numpy(), dtype=np.float32)


class JudgeASR:
    """Intelligibility judge: Whisper tiny.en (CTranslate2) transcripts and WER of 16 kHz waveforms."""

    def __init__(self, model_dir: Optional[str] = None, device: Optional[str] = None,
                 compute_type: str = "float32", num_threads: int = 0, beam_size: int = 5):
        import ctranslate2

        self.model_dir = str(Path(model_dir or default_whisper_model()).resolve())
        if not (Path(self.model_dir) / "model.bin").is_file():
            raise FileNotFoundError(f"{self.model_dir}: not a CTranslate2 model dir (no model.bin)")
        self.device = device or ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu")
        self.model = ctranslate2.models.Whisper(self.model_dir, device=self.device, compute_type=compute_type,
                                                intra_threads=num_threads or torch.get_num_threads())
        self.decoder = load_whisper_decoder(self.model_dir)
        self.beam_size = beam_size
        task = ["<|en|>", "<|transcribe|>"] if self.model.is_multilingual else []  # .en models: no task tokens
        self.prompt = ["<|startoftranscript|>", *task, "<|notimestamps|>"]

    def transcribe(self, waves: Sequence[Wave], sr: int = SAMPLE_RATE, batch_size: int = 8) -> List[str]:
        """Transcripts of up-to-30-s 16 kHz waveforms, decoded ``batch_size`` at a time."""
        import ctranslate2

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        texts: List[str] = []
        for start in range(0, len(waves), batch_size):
            feats = np.stack([whisper_features(w, sr) for w in waves[start:start + batch_size]])
            results = self.model.generate(ctranslate2.StorageView.from_array(feats),
                                          [self.prompt] * len(feats), beam_size=self.beam_size)
            texts += [self.decoder.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
        logger.debug("transcribed %d utterances", len(texts))
        return texts

    def wer(self, waves: Sequence[Wave], refs: Sequence[str], sr: int = SAMPLE_RATE) -> dict:
        """Corpus WER/CER (%) of the transcripts against ``refs`` (softtok.downstream.scoring), plus ``hyps``."""
        if len(waves) != len(refs):
            raise ValueError(f"got {len(waves)} waveforms but {len(refs)} reference texts")
        hyps = self.transcribe(waves, sr)
        keys = [f"utt{i:06d}" for i in range(len(refs))]
        result = score(dict(zip(keys, refs)), dict(zip(keys, hyps)))
        return {**result, "hyps": hyps}
