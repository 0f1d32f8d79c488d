"""k-means models as other toolkits save them: a centroid .npy, or a joblib pickle of an sklearn k-means (ESPnet's
``km_<K>.mdl``, DASB's ``…_k<K>_L<layer>.pt``), unpickled only on the user's explicit opt-in (``--allow-pickle``):
unpickling runs code from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from softtok.adapters import AdapterError
from softtok.tokenizers.kmeans import Codebook


def read_kmeans(path: Path, allow_pickle: bool, pickle_suffixes: Sequence[str], what: str) -> Codebook:
    """A centroid .npy (K, D), or with ``allow_pickle`` the ``cluster_centers_`` of a pickled k-means whose suffix is
    one of ``pickle_suffixes``; ``what`` names that pickle in messages (``ESPnet's km_<K>.mdl``)."""
    if not path.is_file():
        raise AdapterError(f"{path}: k-means model not found")
    if path.suffix == ".npy":
        return Codebook.load(path)
    if path.suffix not in pickle_suffixes:
        raise AdapterError(f"{path}: give a centroid .npy or {what}")
    if not allow_pickle:
        raise AdapterError(f"{path}: a pickle ({what}, a joblib sklearn k-means); unpickling runs code from the "
                           f"file: give --allow-pickle if you trust it, or convert it once where you do: python -c "
                           f"\"import joblib, numpy; numpy.save('km.npy', joblib.load('{path}').cluster_centers_)\"")
    import joblib

    centres = getattr(joblib.load(path), "cluster_centers_", None)
    if centres is None or np.ndim(centres) != 2:
        raise AdapterError(f"{path}: no cluster_centers_ (K, D) in the pickled object")
    return Codebook(np.ascontiguousarray(centres, dtype=np.float32), {"source": str(path.resolve())})
