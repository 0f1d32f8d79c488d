"""Data sets with new audio: speed perturbation and additive noise (babble or pink) at an SNR.

Every builder validates its inputs before writing anything (see :mod:`.subsets`), writes audio once (a rerun
skips what a previous run already wrote, refusing other settings) with per-utterance seeds independent of
processing order, and returns the written data dir. Noise mixing runs torch on one thread and decodes each babble
talker once (bench/NOISE_MIXING.md: where its time went and what that saved).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.recipes.subsets import check_outputs, load_source
from softtok.tokenizers.audio import (PEAK_LIMIT, TARGET_SAMPLE_RATE, limit_peak, read_utterance, resample,
                                     torch_threads, write_audio)
from softtok.tokenizers.datadir import (DataDir, DataError, Segment, render_kaldi_map, speaker_files,
                                        write_data_dir, write_if_changed)
from softtok.tokenizers.fileio import load_yaml

logger = logging.getLogger(__name__)

BABBLE_TALKERS = (3, 5)  # babble = sum of this many (inclusive range) other utterances
NOISE_TYPES = ("babble", "pink")
# decoded babble talkers kept for reuse; the speechocean762 train_nodev pool is ~0.6 GB as float32, FSDD ~0.1 GB
TALKER_CACHE_BYTES = 1 << 29


# ----------------------------------------------------------------------------- audio helpers


def _check_utt_ids(data: DataDir) -> None:
    """Utterance ids become file names: refuse ones that are not safe as such."""
    for utt in data.utt_ids:
        if "/" in utt or utt.startswith("."):
            raise DataError(f"{data.path}: utterance id {utt!r} cannot be used as a file name")


def _utt_seed(seed: int, *parts: str) -> int:
    """A per-utterance seed independent of processing order (so resumed runs give the same audio)."""
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check_settings(path: Path, settings: dict, must_match: Sequence[str]) -> None:
    """Refuse to resume into a dir made with other settings (its audio would be silently reused)."""
    if not path.is_file():
        return
    old = load_yaml(path)
    for key in must_match:
        if old.get(key) != settings[key]:
            raise DataError(f"{path}: made with {key}={old.get(key)!r}, not {settings[key]!r}; "
                            f"use a new output dir or delete it")


def _progress(items: Sequence, desc: str) -> tqdm:
    """A progress bar over utterances (wrap the loop in logging_redirect_tqdm)."""
    return tqdm(items, desc=desc, unit="utt", mininterval=2.0)


# ----------------------------------------------------------------------------- speed perturbation


def _factor_name(factor: float) -> str:
    """ESPnet's id prefix: ``sp0.9-``."""
    return f"sp{factor:g}-"


def perturb_speed(wave: torch.Tensor, factor: float, sample_rate: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Sox ``speed``: play ``factor`` times faster (tempo and pitch change; 1.1 is 10 % shorter).

    The samples are taken as recorded at ``sample_rate * factor`` and resampled to ``sample_rate``.
    """
    return resample(wave, int(round(sample_rate * factor)), sample_rate)


def _check_factors(factors: Sequence[float]) -> List[float]:
    """Speed factors as floats: non-empty, distinct, within [0.5, 2] (catches 90 for 0.9)."""
    factors = [float(f) for f in factors]
    if not factors:
        raise DataError("speed factors: none given")
    for f in factors:
        if not (math.isfinite(f) and 0.5 <= f <= 2.0):
            raise DataError(f"speed factor must be in [0.5, 2], got {f!r}")
    if len({_factor_name(f) for f in factors}) != len(factors):
        raise DataError(f"speed factors are not distinct: {factors}")
    return factors


def speed_perturb(src_dir: os.PathLike | str, out_dir: os.PathLike | str,
                  factors: Sequence[float] = (0.9, 1.0, 1.1)) -> Path:
    """One data dir holding every utterance at every speed factor (Kaldi/ESPnet speed perturbation).

    For f != 1 utterance and speaker ids become ``sp{f}-{id}`` and the audio is written as FLAC under
    ``out_dir/audio/``; f = 1.0 keeps ids and original paths (segments are cut into files).
    """
    factors = _check_factors(factors)
    data = load_source(src_dir)
    check_outputs(data, out_dir)
    _check_utt_ids(data)
    out = Path(out_dir)
    settings = {"source": str(data.path.resolve()), "factors": factors}
    _check_settings(out / "speed.yaml", settings, ["source"])
    wav: Dict[str, str] = {}
    text: Optional[Dict[str, str]] = {} if data.text is not None else None
    utt2spk: Dict[str, str] = {}
    src_spk_files = speaker_files(data)
    spk_files: Dict[str, Dict[str, str]] = {name: {} for name in src_spk_files}
    jobs: List[Tuple[str, str, float]] = []  # (new utt, source utt, factor) needing audio
    for factor in factors:
        prefix = "" if factor == 1.0 else _factor_name(factor)
        for utt in data.utt_ids:
            new = prefix + utt
            if factor == 1.0 and data.segments is None:
                wav[new] = os.path.abspath(data.resolve(data.wav_scp[utt]))
            else:
                wav[new] = str((out / "audio" / f"{new}.flac").resolve())
                jobs.append((new, utt, factor))
            if text is not None:
                text[new] = data.text[utt]
            utt2spk[new] = prefix + (data.utt2spk[utt] if data.utt2spk is not None else utt)
        for name, mapping in src_spk_files.items():
            spk_files[name].update({prefix + s: v for s, v in mapping.items()})
    todo = [job for job in jobs if not Path(wav[job[0]]).is_file()]
    logger.info("speed perturbation %s of %s: %d utterances, %d audio files to write (%d done before)",
                factors, data.path, len(wav), len(todo), len(jobs) - len(todo))
    scaled = 0
    with logging_redirect_tqdm():
        for new, utt, factor in _progress(todo, "speed perturb"):
            wave, was_scaled = limit_peak(perturb_speed(read_utterance(data, utt), factor))
            scaled += was_scaled
            write_audio(Path(wav[new]), wave, audio_format="FLAC")
    if scaled:
        logger.warning("speed perturbation: scaled %d of %d utterances down to peak %.2f", scaled, len(todo),
                       PEAK_LIMIT)
    write_if_changed(out / "speed.yaml", _yaml_text(settings))
    return write_data_dir(out, wav, text, utt2spk if data.utt2spk is not None else None, spk_files)


def _yaml_text(data: dict) -> str:
    """The YAML text save_yaml would write (to compare before rewriting)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------- additive noise


def mix_at_snr(signal: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``signal + g * noise`` with g chosen so mean(signal²) / mean((g·noise)²) is ``snr_db`` dB."""
    p_signal = float(signal.double().pow(2).mean())
    p_noise = float(noise.double().pow(2).mean())
    if p_signal <= 0 or p_noise <= 0:
        raise DataError(f"cannot mix at {snr_db} dB: {'signal' if p_signal <= 0 else 'noise'} is silent")
    gain = math.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return signal + gain * noise


def pink_noise(n_samples: int, seed: int) -> torch.Tensor:
    """Seeded pink (1/f power) Gaussian noise: white noise shaped by 1/sqrt(f) in the frequency domain."""
    gen = torch.Generator().manual_seed(seed)
    white = torch.randn(n_samples, generator=gen, dtype=torch.float64)
    spectrum = torch.fft.rfft(white)
    freqs = torch.arange(spectrum.numel(), dtype=torch.float64)
    spectrum[1:] /= freqs[1:].sqrt()
    spectrum[0] = 0
    pink = torch.fft.irfft(spectrum, n=n_samples)
    return (pink / pink.std().clamp_min(1e-12)).float()


def _loop_to(wave: torch.Tensor, n_samples: int, offset: int) -> torch.Tensor:
    """``wave`` repeated and cropped to ``n_samples``, starting ``offset`` samples in."""
    reps = (offset + n_samples) // wave.numel() + 1
    return wave.repeat(reps)[offset:offset + n_samples]


AudioKey = Tuple[str, Optional[Segment]]


def _audio_key(data: DataDir, utt: str) -> AudioKey:
    """The real file and span an utterance is read from (same audio under two ids is one key)."""
    path, segment = data.audio_source(utt)
    return os.path.realpath(path), segment


def _babble_talkers(utt: str, excluded: Set[str], pool_ids: List[str], pool_set: Set[str], seed: int) -> List[str]:
    """Seeded choice of 3-5 pool utterances outside ``excluded`` (the utterance itself, by id and audio)."""
    rng = random.Random(_utt_seed(seed, "babble", utt))
    k = rng.randint(*BABBLE_TALKERS)
    available = len(pool_ids) - sum(u in pool_set for u in excluded)
    if available < BABBLE_TALKERS[0]:
        raise DataError(f"babble noise source has {available} utterances other than {utt!r}; "
                        f"need at least {BABBLE_TALKERS[0]}")
    drawn = rng.sample(pool_ids, min(len(pool_ids), k + len(excluded)))
    return sorted([u for u in drawn if u not in excluded][:k], key=lambda u: u.encode())


class _Talkers:
    """A babble pool's talkers, each decoded once and kept (with its power) until its last planned use.

    Decoding a talker costs about as much as the rest of mixing an utterance, and a full test set draws each pool
    utterance ~4 times; past ``budget`` bytes (default ``TALKER_CACHE_BYTES``) a talker is decoded again at each use.
    """

    def __init__(self, pool: DataDir, uses: Counter, budget: Optional[int] = None):
        self.pool, self.uses = pool, uses
        self.budget = TALKER_CACHE_BYTES if budget is None else budget
        self.kept: Dict[str, Tuple[torch.Tensor, float]] = {}
        self.kept_bytes = 0
        self.reads = 0

    def get(self, talker: str) -> Tuple[torch.Tensor, float]:
        """The talker's waveform and its mean power (mean of the squares in float64)."""
        self.uses[talker] -= 1
        item = self.kept.pop(talker, None)
        if item is None:
            item = self._read(talker)
        else:
            self.kept_bytes -= item[0].nbytes
        if self.uses[talker] > 0 and self.kept_bytes + item[0].nbytes <= self.budget:
            self.kept[talker] = item
            self.kept_bytes += item[0].nbytes
        return item

    def _read(self, talker: str) -> Tuple[torch.Tensor, float]:
        wave = read_utterance(self.pool, talker)
        power = float(wave.double().pow(2).mean())
        if power <= 0:
            raise DataError(f"{self.pool.path}: babble utterance {talker!r} is silent")
        self.reads += 1
        return wave, power


def _babble(talkers: List[str], pool: _Talkers, n_samples: int, seed: int, utt: str) -> torch.Tensor:
    """Sum of the talkers at equal power, each looped/cropped to ``n_samples`` from a seeded offset."""
    rng = random.Random(_utt_seed(seed, "offset", utt))
    total = torch.zeros(n_samples)
    for talker in talkers:
        wave, power = pool.get(talker)
        total += _loop_to(wave, n_samples, rng.randrange(wave.numel())) / math.sqrt(power)
    return total


def _talkers_of(plan: str) -> List[str]:
    """The pool utterances an ``utt2noise`` entry mixes (none for pink noise)."""
    kind, arg = plan.split(" ", 1)
    return arg.split(",") if kind == "babble" else []


def _noise_plan(data: DataDir, pool: DataDir, noise: str, seed: int) -> Dict[str, str]:
    """Per-utterance noise description (``utt2noise``): babble talkers or the pink-noise seed."""
    plan = {}
    by_audio: Dict[AudioKey, Set[str]] = {}
    pool_ids = pool.utt_ids
    pool_set = set(pool_ids)
    if noise == "babble":
        for u in pool.utt_ids:
            by_audio.setdefault(_audio_key(pool, u), set()).add(u)
    for utt in data.utt_ids:
        if noise == "babble":
            excluded = {utt} | by_audio.get(_audio_key(data, utt), set())
            plan[utt] = "babble " + ",".join(_babble_talkers(utt, excluded, pool_ids, pool_set, seed))
        else:
            plan[utt] = f"pink seed={_utt_seed(seed, 'pink', utt)}"
    return plan


def _noise_for(utt: str, plan: str, pool: DataDir, n_samples: int, seed: int,
               talkers: Optional[_Talkers] = None) -> torch.Tensor:
    """The noise waveform an ``utt2noise`` entry describes, ``n_samples`` long (``talkers``: the pool, cached)."""
    kind, arg = plan.split(" ", 1)
    if kind == "babble":
        names = _talkers_of(plan)
        return _babble(names, talkers or _Talkers(pool, Counter(names)), n_samples, seed, utt)
    return pink_noise(n_samples, int(arg.split("=", 1)[1]))


def _noise_speakers(plan: Dict[str, str], pool: DataDir) -> List[str]:
    """Speakers of every babble talker in the plan (by the pool's utt2spk; an utterance without one is its own)."""
    utt2spk = pool.utt2spk or {}
    return sorted({utt2spk.get(t, t) for entry in plan.values() for t in _talkers_of(entry)}, key=str.encode)


def _warn_shared_speakers(data: DataDir, pool: DataDir, speakers: List[str]) -> None:
    """A separate babble pool should hold none of the voices mixed into (the speakers evaluated on the output)."""
    evaluated = set(data.utt2spk.values()) if data.utt2spk is not None else set(data.utt_ids)
    shared = sorted(evaluated.intersection(speakers))
    if shared and pool.path.resolve() != data.path.resolve():
        logger.warning("babble source %s holds %d speaker(s) of %s itself, e.g. %s", pool.path, len(shared),
                       data.path, ", ".join(shared[:3]))


def add_noise(src_dir: os.PathLike | str, out_dir: os.PathLike | str, snr_db: float, noise: str = "babble",
              seed: int = 0, noise_source_dir: Optional[os.PathLike | str] = None) -> Path:
    """Every utterance mixed with ``noise`` (babble or pink) at ``snr_db`` dB, same ids and text.

    Babble sums 3-5 other utterances of ``noise_source_dir`` (default: the source dir). Mixtures whose
    peak exceeds 0.99 are scaled down as a whole. Settings go to ``noise.yaml`` (with the babble talkers' speakers,
    ``noise_speakers``), choices to ``utt2noise``.
    """
    try:
        snr_db = float(snr_db)
    except (TypeError, ValueError):
        raise DataError(f"SNR must be a finite number of dB, got {snr_db!r}") from None
    if not math.isfinite(snr_db):
        raise DataError(f"SNR must be a finite number of dB, got {snr_db!r}")
    if noise not in NOISE_TYPES:
        raise DataError(f"unknown noise type {noise!r}; choose from {', '.join(NOISE_TYPES)}")
    data = load_source(src_dir)
    pool = load_source(noise_source_dir) if noise_source_dir is not None and noise == "babble" else data
    if noise_source_dir is not None and noise != "babble":
        logger.warning("--noise-source is only used by babble noise; ignoring it")
    check_outputs(data, out_dir)
    _check_utt_ids(data)
    out = Path(out_dir)
    settings = {"noise": noise, "snr_db": float(snr_db), "seed": int(seed), "source": str(data.path.resolve()),
                "noise_source": str(pool.path.resolve()) if noise == "babble" else None,
                "babble_talkers": list(BABBLE_TALKERS) if noise == "babble" else None,
                "snr_definition": "mean signal power over the utterance / mean noise power",
                "peak_limit": PEAK_LIMIT}
    _check_settings(out / "noise.yaml", settings, ["noise", "snr_db", "seed", "source", "noise_source"])
    plan = _noise_plan(data, pool, noise, seed)
    settings["noise_speakers"] = _noise_speakers(plan, pool) if noise == "babble" else None
    _warn_shared_speakers(data, pool, settings["noise_speakers"] or [])
    wav = {u: str((out / "audio" / f"{u}.flac").resolve()) for u in data.utt_ids}
    todo = [u for u in data.utt_ids if not Path(wav[u]).is_file()]
    logger.info("%s noise at %g dB on %s: %d to write (%d done before)", noise, snr_db, data.path, len(todo),
                len(wav) - len(todo))
    talkers = _Talkers(pool, Counter(t for u in todo for t in _talkers_of(plan[u])))
    scaled = 0
    with logging_redirect_tqdm(), torch_threads(1):
        for utt in _progress(todo, f"{noise} {snr_db:g} dB"):
            clean = read_utterance(data, utt)
            mixture = mix_at_snr(clean, _noise_for(utt, plan[utt], pool, clean.numel(), seed, talkers), snr_db)
            mixture, was_scaled = limit_peak(mixture)
            scaled += was_scaled
            write_audio(Path(wav[utt]), mixture, audio_format="FLAC")
    if talkers.reads:
        logger.info("babble: %d talker decodes for %d draws", talkers.reads,
                    sum(len(_talkers_of(plan[u])) for u in todo))
    if scaled:
        logger.warning("add noise: scaled %d of %d mixtures down to peak %.2f", scaled, len(todo), PEAK_LIMIT)
    write_if_changed(out / "noise.yaml", _yaml_text(settings))
    write_if_changed(out / "utt2noise", render_kaldi_map(plan))
    text = dict(data.text) if data.text is not None else None
    utt2spk = dict(data.utt2spk) if data.utt2spk is not None else None
    return write_data_dir(out, wav, text, utt2spk, speaker_files(data))

