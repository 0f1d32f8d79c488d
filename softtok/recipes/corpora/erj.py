"""ERJ (English Read by Japanese, licensed from NII-SRC): the sentences of a manifest the user writes.

No checksums are published for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

from softtok.recipes.corpora.common import one_line, require_corpus_path
from softtok.tokenizers.datadir import DataError, write_data_dir

logger = logging.getLogger(__name__)

ERJ_MANIFEST = "softtok_erj.tsv"


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
        wav[utt], text[utt], utt2spk[utt] = str(path), one_line(sentence), speaker
        if len(fields) == 5 and fields[4].strip().lower() in ("m", "f"):
            genders[speaker] = fields[4].strip().lower()
    if not wav:
        raise DataError(f"{manifest}: no utterances")
    dest = write_data_dir(Path(out_dir) / "erj", wav, text, utt2spk, {"spk2gender": genders} if genders else None)
    logger.info("erj: %d utterances of %d speakers -> %s", len(wav), len(set(utt2spk.values())), dest)
    return {"erj": dest}
