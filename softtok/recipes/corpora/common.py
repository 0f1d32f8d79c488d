"""What several corpus modules share: the missing-path error that says where to download, whitespace folding,
the NIST SPHERE check and file digests."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from softtok.recipes.corpora import CORPORA  # the registry itself imports no corpus module
from softtok.tokenizers.datadir import DataError
from softtok.tokenizers.fileio import sha256_of


def require_corpus_path(path: Path, corpus: str) -> None:
    """One-line error naming ``path`` and where ``corpus`` can be downloaded, if ``path`` is missing."""
    if not path.exists():
        raise DataError(f"{path}: not found; is this a {corpus} folder? Download: {download(corpus)}")


def download(corpus: str) -> str:
    """Where ``corpus`` can be had, as the registry states it."""
    return CORPORA[corpus].download


def one_line(text: str) -> str:
    """Whitespace collapsed: Kaldi ``text`` values are one line."""
    return " ".join(text.split())


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


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file (a corpus archive against its module's ``CHECKSUMS``, a voice model)."""
    return sha256_of(path)
