"""Data-set builders for the ASR recipes: speaker splits, attribute subsets, speed perturbation, noise.

Every builder validates its inputs before writing anything, writes Kaldi data dirs with absolute
audio paths and sorted keys, writes files atomically (unchanged files are left untouched), skips
audio that a previous run already wrote, and returns the written data dir (a pair for two-way splits).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import random
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torchaudio.functional as AF
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.tokenizers.audio import PEAK_LIMIT, TARGET_SAMPLE_RATE, limit_peak, read_utterance, write_audio
from softtok.tokenizers.datadir import (DataDir, DataError, Segment, load_data_dir, read_kaldi_map, render_kaldi_map,
                                        speaker_files, subset_data_dir, write_data_dir, write_if_changed)
from softtok.tokenizers.fileio import load_yaml

logger = logging.getLogger(__name__)

ADULT_AGE = 18  # legal adulthood; speechocean762 has no speaker aged 16-18, so any cut-off there splits alike
US_ACCENT_PREFIX = "USA"  # FSDD speakers.tsv: "USA/neutral" vs "DEU/German", "BEL/French", "GRC/Greek"
BABBLE_TALKERS = (3, 5)  # babble = sum of this many (inclusive range) other utterances
NOISE_TYPES = ("babble", "pink")


# ----------------------------------------------------------------------------- data-dir helpers


def _load(src_dir: os.PathLike | str, need_speakers: bool = False) -> DataDir:
    """Load and validate a source dir; speaker operations also need utt2spk."""
    data = load_data_dir(src_dir)
    if need_speakers and data.utt2spk is None:
        raise DataError(f"{data.path / 'utt2spk'}: file not found (needed to select speakers)")
    return data


def _check_outputs(src: DataDir, *outs: os.PathLike | str) -> None:
    """Refuse to write over the source dir or to write two outputs into one dir."""
    resolved = [Path(o).resolve() for o in outs]
    if src.path.resolve() in resolved:
        raise DataError(f"{src.path}: output dir must differ from the source dir")
    if len(set(resolved)) != len(resolved):
        raise DataError(f"{outs[0]}: output dirs must differ from each other")


def _speakers(data: DataDir) -> List[str]:
    """Speaker ids of a dir with utt2spk, sorted bytewise."""
    assert data.utt2spk is not None
    return sorted(set(data.utt2spk.values()), key=lambda k: k.encode())


def _utts_of(data: DataDir, speakers: Set[str]) -> List[str]:
    """Utterances (sorted) of the given speakers."""
    assert data.utt2spk is not None
    return [u for u in data.utt_ids if data.utt2spk[u] in speakers]


# ----------------------------------------------------------------------------- speaker splits


def split_by_speaker(src_dir: os.PathLike | str, out_a: os.PathLike | str, out_b: os.PathLike | str,
                     fraction: float = 0.1, seed: int = 0) -> Tuple[Path, Path]:
    """Hold out ~``fraction`` of the speakers (seeded shuffle) into ``out_b``, the rest into ``out_a``.

    Returns ``(out_a, out_b)``: no speaker is in both, every utterance is in one (a train/dev split).
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise DataError(f"fraction must be in (0, 1), got {fraction!r}")
    data = _load(src_dir, need_speakers=True)
    _check_outputs(data, out_a, out_b)
    speakers = _speakers(data)
    if len(speakers) < 2:
        raise DataError(f"{data.path / 'utt2spk'}: {len(speakers)} speaker(s); need at least 2 to split")
    n_held = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    shuffled = list(speakers)
    random.Random(seed).shuffle(shuffled)
    held = set(shuffled[:n_held])
    kept = set(speakers) - held
    path_a = subset_data_dir(data, out_a, _utts_of(data, kept))
    path_b = subset_data_dir(data, out_b, _utts_of(data, held))
    logger.info("speaker split of %s: %d speakers -> %s, %d -> %s (seed %d)",
                data.path, len(kept), out_a, len(held), out_b, seed)
    return path_a, path_b


def _select_speakers(data: DataDir, file: str, predicate: Callable[[str], bool]) -> Set[str]:
    """Speakers whose value in ``data.path/file`` satisfies ``predicate``; every speaker needs a value."""
    path = data.path / file
    values = read_kaldi_map(path, require_sorted=False)
    selected = set()
    for spk in _speakers(data):
        if spk not in values:
            raise DataError(f"{path}: no entry for speaker {spk!r}")
        try:
            if predicate(values[spk]):
                selected.add(spk)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: speaker {spk!r}: bad value {values[spk]!r} ({exc})") from None
    return selected


def subset_by_speaker_attribute(src_dir: os.PathLike | str, out_dir: os.PathLike | str, file: str,
                                predicate: Callable[[str], bool]) -> Path:
    """Keep the speakers whose value in a per-speaker file (e.g. ``spk2age``) satisfies ``predicate``."""
    data = _load(src_dir, need_speakers=True)
    _check_outputs(data, out_dir)
    speakers = _select_speakers(data, file, predicate)
    if not speakers:
        raise DataError(f"{data.path / file}: no speaker matches the selection")
    logger.info("%s: %d of %d speakers selected by %s", data.path, len(speakers), len(_speakers(data)), file)
    return subset_data_dir(data, out_dir, _utts_of(data, speakers))


def _split_two(src_dir: os.PathLike | str, out_yes: os.PathLike | str, out_no: os.PathLike | str, file: str,
               predicate: Callable[[str], bool], names: Tuple[str, str]) -> Tuple[Path, Path]:
    """Split by a per-speaker predicate into two dirs; both must be non-empty (checked before writing)."""
    data = _load(src_dir, need_speakers=True)
    _check_outputs(data, out_yes, out_no)
    yes = _select_speakers(data, file, predicate)
    no = set(_speakers(data)) - yes
    for name, group in zip(names, (yes, no)):
        if not group:
            raise DataError(f"{data.path / file}: no {name} speakers; nothing to split")
    logger.info("%s: %d %s and %d %s speakers", data.path, len(yes), names[0], len(no), names[1])
    return subset_data_dir(data, out_yes, _utts_of(data, yes)), subset_data_dir(data, out_no, _utts_of(data, no))


def split_adults_children(src_dir: os.PathLike | str, out_adults: os.PathLike | str,
                          out_children: os.PathLike | str, adult_age: int = ADULT_AGE) -> Tuple[Path, Path]:
    """Split by ``spk2age``: adults (age >= ``adult_age``, 18 by default) vs children; returns both dirs.

    18 is legal adulthood; speechocean762's ages (6-43) have a gap at 16-18, so the split is stable there.
    """
    return _split_two(src_dir, out_adults, out_children, "spk2age",
                      lambda age: int(age) >= adult_age, ("adult", "child"))


def split_fsdd_accents(src_dir: os.PathLike | str, out_us: os.PathLike | str,
                       out_nonus: os.PathLike | str) -> Tuple[Path, Path]:
    """Split FSDD by ``spk2accent``: US (``USA/neutral``) vs non-US (German, French, Greek) speakers."""
    return _split_two(src_dir, out_us, out_nonus, "spk2accent",
                      lambda accent: accent.startswith(US_ACCENT_PREFIX), ("US", "non-US"))


def split_by_attribute(src_dir: os.PathLike | str, out_prefix: os.PathLike | str, file: str) -> List[Path]:
    """One dir ``<out_prefix>_<value>`` per value of a per-speaker file (e.g. L2-ARCTIC's ``spk2l1``), sorted
    by value; every speaker needs a value, and values must be usable in a dir name."""
    data = _load(src_dir, need_speakers=True)
    values = read_kaldi_map(data.path / file, require_sorted=False)
    groups: Dict[str, Set[str]] = {}
    for spk in _speakers(data):
        if spk not in values:
            raise DataError(f"{data.path / file}: no entry for speaker {spk!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", values[spk]):
            raise DataError(f"{data.path / file}: speaker {spk!r}: value {values[spk]!r} cannot name a dir")
        groups.setdefault(values[spk], set()).add(spk)
    outs = [Path(f"{out_prefix}_{value}") for value in sorted(groups)]
    _check_outputs(data, *outs)
    logger.info("%s: %d groups by %s: %s", data.path, len(groups), file, ", ".join(sorted(groups)))
    return [subset_data_dir(data, out, _utts_of(data, groups[value])) for value, out in zip(sorted(groups), outs)]


def combine_data_dirs(src_dirs: Sequence[os.PathLike | str], out_dir: os.PathLike | str) -> Path:
    """One data dir of all utterances of ``src_dirs`` (e.g. dev-clean + dev-other); ids must not repeat.

    Dirs with ``segments`` are not combined (their recording ids could collide); per-speaker files are merged.
    """
    sources = [_load(src) for src in src_dirs]
    for data in sources:
        _check_outputs(data, out_dir)
    wav: Dict[str, str] = {}
    text: Dict[str, str] = {}
    utt2spk: Dict[str, str] = {}
    spk_files: Dict[str, Dict[str, str]] = {}
    for data in sources:
        if data.segments is not None:
            raise DataError(f"{data.path / 'segments'}: dirs with segments cannot be combined")
        if data.text is None:
            raise DataError(f"{data.path / 'text'}: file not found (combined dirs keep their transcripts)")
        for utt in data.utt_ids:
            if utt in wav:
                raise DataError(f"{data.path}: utterance {utt!r} is also in an earlier source dir")
            wav[utt] = os.path.abspath(data.resolve(data.wav_scp[utt]))
            text[utt] = data.text[utt]
            utt2spk[utt] = data.utt2spk[utt] if data.utt2spk is not None else utt
        for name, mapping in speaker_files(data).items():
            spk_files.setdefault(name, {}).update(mapping)
    logger.info("combined %d dirs (%d utterances) -> %s", len(sources), len(wav), out_dir)
    return write_data_dir(out_dir, wav, text, utt2spk, spk_files)


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
    return AF.resample(wave, int(round(sample_rate * factor)), sample_rate)


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
    data = _load(src_dir)
    _check_outputs(data, out_dir)
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


def _babble(talkers: List[str], pool: DataDir, n_samples: int, seed: int, utt: str) -> torch.Tensor:
    """Sum of the talkers at equal power, each looped/cropped to ``n_samples`` from a seeded offset."""
    rng = random.Random(_utt_seed(seed, "offset", utt))
    total = torch.zeros(n_samples)
    for talker in talkers:
        wave = read_utterance(pool, talker)
        power = float(wave.double().pow(2).mean())
        if power <= 0:
            raise DataError(f"{pool.path}: babble utterance {talker!r} is silent")
        total += _loop_to(wave, n_samples, rng.randrange(wave.numel())) / math.sqrt(power)
    return total


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


def _noise_for(utt: str, plan: str, pool: DataDir, n_samples: int, seed: int) -> torch.Tensor:
    """The noise waveform an ``utt2noise`` entry describes, ``n_samples`` long."""
    kind, arg = plan.split(" ", 1)
    if kind == "babble":
        return _babble(arg.split(","), pool, n_samples, seed, utt)
    return pink_noise(n_samples, int(arg.split("=", 1)[1]))


def add_noise(src_dir: os.PathLike | str, out_dir: os.PathLike | str, snr_db: float, noise: str = "babble",
              seed: int = 0, noise_source_dir: Optional[os.PathLike | str] = None) -> Path:
    """Every utterance mixed with ``noise`` (babble or pink) at ``snr_db`` dB, same ids and text.

    Babble sums 3-5 other utterances of ``noise_source_dir`` (default: the source dir). Mixtures whose
    peak exceeds 0.99 are scaled down as a whole. Settings go to ``noise.yaml``, choices to ``utt2noise``.
    """
    try:
        snr_db = float(snr_db)
    except (TypeError, ValueError):
        raise DataError(f"SNR must be a finite number of dB, got {snr_db!r}") from None
    if not math.isfinite(snr_db):
        raise DataError(f"SNR must be a finite number of dB, got {snr_db!r}")
    if noise not in NOISE_TYPES:
        raise DataError(f"unknown noise type {noise!r}; choose from {', '.join(NOISE_TYPES)}")
    data = _load(src_dir)
    pool = _load(noise_source_dir) if noise_source_dir is not None and noise == "babble" else data
    if noise_source_dir is not None and noise != "babble":
        logger.warning("--noise-source is only used by babble noise; ignoring it")
    _check_outputs(data, out_dir)
    _check_utt_ids(data)
    out = Path(out_dir)
    settings = {"noise": noise, "snr_db": float(snr_db), "seed": int(seed), "source": str(data.path.resolve()),
                "noise_source": str(pool.path.resolve()) if noise == "babble" else None,
                "babble_talkers": list(BABBLE_TALKERS) if noise == "babble" else None,
                "snr_definition": "mean signal power over the utterance / mean noise power",
                "peak_limit": PEAK_LIMIT}
    _check_settings(out / "noise.yaml", settings, ["noise", "snr_db", "seed", "source", "noise_source"])
    plan = _noise_plan(data, pool, noise, seed)
    wav = {u: str((out / "audio" / f"{u}.flac").resolve()) for u in data.utt_ids}
    todo = [u for u in data.utt_ids if not Path(wav[u]).is_file()]
    logger.info("%s noise at %g dB on %s: %d to write (%d done before)", noise, snr_db, data.path, len(todo),
                len(wav) - len(todo))
    scaled = 0
    with logging_redirect_tqdm():
        for utt in _progress(todo, f"{noise} {snr_db:g} dB"):
            clean = read_utterance(data, utt)
            mixture = mix_at_snr(clean, _noise_for(utt, plan[utt], pool, clean.numel(), seed), snr_db)
            mixture, was_scaled = limit_peak(mixture)
            scaled += was_scaled
            write_audio(Path(wav[utt]), mixture, audio_format="FLAC")
    if scaled:
        logger.warning("add noise: scaled %d of %d mixtures down to peak %.2f", scaled, len(todo), PEAK_LIMIT)
    write_if_changed(out / "noise.yaml", _yaml_text(settings))
    write_if_changed(out / "utt2noise", render_kaldi_map(plan))
    text = dict(data.text) if data.text is not None else None
    utt2spk = dict(data.utt2spk) if data.utt2spk is not None else None
    return write_data_dir(out, wav, text, utt2spk, speaker_files(data))


# ----------------------------------------------------------------------------- CLI


def _cmd_split_speakers(args: argparse.Namespace) -> Sequence[Path]:
    return split_by_speaker(args.src, args.out_a, args.out_b, args.fraction, args.seed)


def _cmd_split_age(args: argparse.Namespace) -> Sequence[Path]:
    return split_adults_children(args.src, args.out_adults, args.out_children, args.adult_age)


def _cmd_split_accent(args: argparse.Namespace) -> Sequence[Path]:
    return split_fsdd_accents(args.src, args.out_us, args.out_nonus)


def _cmd_split_attribute(args: argparse.Namespace) -> Sequence[Path]:
    return split_by_attribute(args.src, args.out_prefix, args.file)


def _cmd_combine(args: argparse.Namespace) -> Sequence[Path]:
    return [combine_data_dirs(args.src, args.out)]


def _cmd_speed(args: argparse.Namespace) -> Sequence[Path]:
    return [speed_perturb(args.src, args.out, args.factors)]


def _cmd_noise(args: argparse.Namespace) -> Sequence[Path]:
    return [add_noise(args.src, args.out, args.snr, args.noise, args.seed, args.noise_source)]


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """Subcommands split-speakers, split-age, split-accent, split-attribute, combine, speed-perturb, add-noise."""
    parser = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.sets", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split-speakers", help="hold out a fraction of speakers")
    p.add_argument("--src", required=True)
    p.add_argument("--out-a", required=True, help="kept speakers (train)")
    p.add_argument("--out-b", required=True, help="held-out speakers (dev)")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_split_speakers)
    p = sub.add_parser("split-age", help="adults vs children by spk2age")
    p.add_argument("--src", required=True)
    p.add_argument("--out-adults", required=True)
    p.add_argument("--out-children", required=True)
    p.add_argument("--adult-age", type=int, default=ADULT_AGE)
    p.set_defaults(func=_cmd_split_age)
    p = sub.add_parser("split-accent", help="FSDD US vs non-US speakers by spk2accent")
    p.add_argument("--src", required=True)
    p.add_argument("--out-us", required=True)
    p.add_argument("--out-nonus", required=True)
    p.set_defaults(func=_cmd_split_accent)
    p = sub.add_parser("split-attribute", help="one dir <out-prefix>_<value> per value of a per-speaker file")
    p.add_argument("--src", required=True)
    p.add_argument("--out-prefix", required=True)
    p.add_argument("--file", required=True, help="per-speaker file, e.g. spk2l1")
    p.set_defaults(func=_cmd_split_attribute)
    p = sub.add_parser("combine", help="all utterances of several data dirs in one")
    p.add_argument("--src", required=True, nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_combine)
    p = sub.add_parser("speed-perturb", help="sox-style speed perturbation")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    p.set_defaults(func=_cmd_speed)
    p = sub.add_parser("add-noise", help="mix babble or pink noise at an SNR")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--snr", type=float, required=True, help="dB")
    p.add_argument("--noise", default="babble", help=f"one of {', '.join(NOISE_TYPES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-source", default=None, help="data dir of babble talkers (default: --src)")
    p.set_defaults(func=_cmd_noise)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run one subcommand; data problems are one ``error:`` line on stderr and exit status 1."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(args.log_level)
    try:
        outs = args.func(args)
    except DataError as exc:
        print(f"error: {args.command}: {exc}", file=sys.stderr)
        return 1
    logger.info("%s done: %s", args.command, ", ".join(str(o) for o in outs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
