"""speechocean762 (non-native English, Kaldi files per split) and its test subset that is the conversion source."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Sequence

from softtok.recipes.corpora.common import require_corpus_path
from softtok.tokenizers.datadir import DataError, evenly_spaced, load_data_dir, speaker_files, write_data_dir

logger = logging.getLogger(__name__)


def speechocean_audio(corpus: Path, split: str, path: str) -> str:
    """Absolute audio path: the release's paths are relative to the corpus (or the split) folder."""
    for base in (corpus, corpus / split):
        if (base / path).is_file():
            return str(base / path)
    raise DataError(f"{corpus / split / 'wav.scp'}: audio {path!r} not found under {corpus}")


def prepare_speechocean762(corpus_dir: str | Path, out_dir: str | Path,
                           splits: Sequence[str] = ("train", "test")) -> Dict[str, Path]:
    """Copy speechocean762's Kaldi files per split with absolute audio paths (+ spk2age, spk2gender)."""
    corpus = Path(corpus_dir).resolve()
    for split in splits:
        for name in ("wav.scp", "text", "utt2spk"):
            require_corpus_path(corpus / split / name, "speechocean762")
    result = {}
    for split in splits:
        src = load_data_dir(corpus / split, require_text=True)
        wav = {u: speechocean_audio(corpus, split, src.wav_scp[u]) for u in src.utt_ids}
        dest = write_data_dir(Path(out_dir) / split, wav, src.text, src.utt2spk, speaker_files(src))
        logger.info("speechocean762 %s: %d utterances -> %s", split, len(wav), dest)
        result[split] = dest
    return result


def prepare_conversion_source(corpus_dir: str | Path, out_dir: str | Path, n: int = 200) -> Dict[str, Path]:
    """``n`` speechocean762 test utterances, evenly spaced over the sorted ids, as the OOD set ``test_ood``.

    The source speech of any-to-one conversion into the joe voice. Reference text, speakers and per-speaker
    files (spk2age, spk2gender) are kept; wav.scp points to the original Ogg/Opus files (read_audio decodes
    and resamples them on read).
    """
    corpus = Path(corpus_dir).resolve()
    for name in ("wav.scp", "text", "utt2spk"):
        require_corpus_path(corpus / "test" / name, "speechocean762")
    src = load_data_dir(corpus / "test", require_text=True)
    utts = evenly_spaced(src.utt_ids, n)
    wav = {u: speechocean_audio(corpus, "test", src.wav_scp[u]) for u in utts}
    utt2spk = {u: src.utt2spk[u] for u in utts} if src.utt2spk is not None else None
    dest = write_data_dir(Path(out_dir) / "test_ood", wav, {u: src.text[u] for u in utts}, utt2spk,
                          speaker_files(src))
    logger.info("conversion source: %d speechocean762 test utterances -> %s", len(wav), dest)
    return {"test_ood": dest}
