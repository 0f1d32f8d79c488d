"""Data sets made of existing utterances: speaker splits, per-speaker attribute subsets, combined dirs.

Every builder validates its inputs before writing anything, writes Kaldi data dirs with absolute
audio paths and sorted keys, writes files atomically (unchanged files are left untouched), and returns the
written data dir (a pair for two-way splits).
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Set, Tuple

from softtok.tokenizers.datadir import (DataDir, DataError, load_data_dir, read_kaldi_map, speaker_files,
                                        subset_data_dir, write_data_dir)

logger = logging.getLogger(__name__)

ADULT_AGE = 18  # legal adulthood; speechocean762 has no speaker aged 16-18, so any cut-off there splits alike
US_ACCENT_PREFIX = "USA"  # FSDD speakers.tsv: "USA/neutral" vs "DEU/German", "BEL/French", "GRC/Greek"


# ----------------------------------------------------------------------------- data-dir helpers


def load_source(src_dir: os.PathLike | str, need_speakers: bool = False) -> DataDir:
    """Load and validate a source dir; speaker operations also need utt2spk."""
    data = load_data_dir(src_dir)
    if need_speakers and data.utt2spk is None:
        raise DataError(f"{data.path / 'utt2spk'}: file not found (needed to select speakers)")
    return data


def check_outputs(src: DataDir, *outs: os.PathLike | str) -> None:
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
    data = load_source(src_dir, need_speakers=True)
    check_outputs(data, out_a, out_b)
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
    data = load_source(src_dir, need_speakers=True)
    check_outputs(data, out_dir)
    speakers = _select_speakers(data, file, predicate)
    if not speakers:
        raise DataError(f"{data.path / file}: no speaker matches the selection")
    logger.info("%s: %d of %d speakers selected by %s", data.path, len(speakers), len(_speakers(data)), file)
    return subset_data_dir(data, out_dir, _utts_of(data, speakers))


def _split_two(src_dir: os.PathLike | str, out_yes: os.PathLike | str, out_no: os.PathLike | str, file: str,
               predicate: Callable[[str], bool], names: Tuple[str, str]) -> Tuple[Path, Path]:
    """Split by a per-speaker predicate into two dirs; both must be non-empty (checked before writing)."""
    data = load_source(src_dir, need_speakers=True)
    check_outputs(data, out_yes, out_no)
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
    data = load_source(src_dir, need_speakers=True)
    values = read_kaldi_map(data.path / file, require_sorted=False)
    groups: Dict[str, Set[str]] = {}
    for spk in _speakers(data):
        if spk not in values:
            raise DataError(f"{data.path / file}: no entry for speaker {spk!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", values[spk]):
            raise DataError(f"{data.path / file}: speaker {spk!r}: value {values[spk]!r} cannot name a dir")
        groups.setdefault(values[spk], set()).add(spk)
    outs = [Path(f"{out_prefix}_{value}") for value in sorted(groups)]
    check_outputs(data, *outs)
    logger.info("%s: %d groups by %s: %s", data.path, len(groups), file, ", ".join(sorted(groups)))
    return [subset_data_dir(data, out, _utts_of(data, groups[value])) for value, out in zip(sorted(groups), outs)]


def combine_data_dirs(src_dirs: Sequence[os.PathLike | str], out_dir: os.PathLike | str) -> Path:
    """One data dir of all utterances of ``src_dirs`` (e.g. dev-clean + dev-other); ids must not repeat.

    Dirs with ``segments`` are not combined (their recording ids could collide); per-speaker files are merged.
    """
    sources = [load_source(src) for src in src_dirs]
    for data in sources:
        check_outputs(data, out_dir)
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

