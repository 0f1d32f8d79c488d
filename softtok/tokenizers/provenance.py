"""Fingerprints of what an output depends on, so that reuse and loading are decided by content, not by path.

Kept cheap on purpose: small files (wav.scp and segments through the listing they give, feats.scp, feats.yaml,
codebooks) are read whole; big files (audio, feature arks, featurizer checkpoints) are identified by resolved
path, size and mtime, never read. A big file rewritten in place with the same size and the same mtime is therefore
not noticed (``touch`` it to force a recompute); any other change is.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from softtok.tokenizers.datadir import DataDir
from softtok.tokenizers.fileio import ark_of, load_yaml, read_scp_entries

# What each digest entry of a fingerprint stands for, for the one-line messages.
DIGESTS = {"inputs": "the audio listing (utterance ids, audio paths, sizes, mtimes, segments)",
           "checkpoint": "the featurizer checkpoint (path, size, mtime)",
           "features": "the features (feats.scp, feats.yaml, ark sizes and mtimes)",
           "codebook_sha256": "the codebook's content"}


def digest(obj: Any) -> str:
    """SHA-256 hex of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_identity(path: os.PathLike | str) -> Optional[List[Any]]:
    """[resolved path, size, mtime_ns] of a file, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def checkpoint_identity(checkpoint: Optional[str]) -> Optional[str]:
    """Digest of a checkpoint file's identity, or of every file's in a checkpoint folder; None without one."""
    if not checkpoint:
        return None
    path = Path(checkpoint)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return digest([str(path.resolve()), [file_identity(p) for p in files]])


def listing_digest(data: DataDir, utts: Iterable[str]) -> str:
    """Digest of what these utterances are read from: id, audio file identity and segment span of each."""
    rows = []
    for utt in utts:
        path, segment = data.audio_source(utt)
        span = None if segment is None else [segment.recording, segment.start, segment.end]
        rows.append([utt, path, file_identity(path), span])
    return digest(rows)


def feature_fingerprint(spec: Dict[str, Any], data: DataDir, utts: List[str], compress: bool) -> Dict[str, Any]:
    """What a feature shard depends on: the featurizer spec (less the data dir's path), its checkpoint's identity,
    the compression and the audio listing of its utterances."""
    return {"spec": {k: v for k, v in spec.items() if k != "data_dir"},
            "checkpoint": checkpoint_identity(spec.get("checkpoint")), "compress": bool(compress),
            "utts": len(utts), "inputs": listing_digest(data, utts)}


def scp_fingerprint(feats_scp: os.PathLike | str) -> str:
    """Digest of a feats.scp's content, its feats.yaml's and the identity of every ark it points into."""
    scp = Path(feats_scp)
    meta = scp.with_name("feats.yaml")
    arks = sorted({ark_of(location) or location for _, location in read_scp_entries(scp)})
    return digest([hashlib.sha256(scp.read_bytes()).hexdigest(),
                   hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else None,
                   [file_identity(ark) for ark in arks]])


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """What differs between two fingerprints, e.g. ``spec.layer 4 → 2`` or ``the audio listing (...)``."""
    parts = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [f"{key}.{k} {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif key in DIGESTS:
            parts.append(DIGESTS[key])
        else:
            parts.append(f"{key} {a!r} → {b!r}")
    return "; ".join(parts)


def shard_status(marker: Path, fingerprint: Dict[str, Any]) -> Optional[str]:
    """None when ``marker`` (a shard's .done) records ``fingerprint``, else why not (not done, or what differs)."""
    if not marker.is_file():
        return "not done"
    recorded = load_yaml(marker).get("fingerprint")
    if not isinstance(recorded, dict):
        return "done by an older softtok that recorded no fingerprint"
    if recorded != fingerprint:
        return f"made from other inputs: {differences(recorded, fingerprint)}"
    return None
