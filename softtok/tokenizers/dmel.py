"""dMel codebooks (Bai et al., 2024, "dMel: Speech Tokenization made Simple"): log-mel channels binned by intensity.

Every channel of a log-mel frame is quantised on its own to the nearest of K = 2^b values evenly spaced between
the minimum and maximum log-mel value of the training data (one range for all channels, as the paper; or, with
``per_channel_range``, each channel's own). The codebook file is the k-means one: ``M.npy`` float32 (K, C), column
c holding channel c's bin centres, and ``M.yaml`` with ``kind: dmel`` and ``per_channel: true``, which makes every
channel a stream of :mod:`softtok.tokenizers.streams` (hard bins, soft binning
p(b|x_c) = softmax_b(−(x_c − v_b)²/τ), one embedding table per channel).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from softtok.tokenizers.jobs import feature_spec_of, load_frames
from softtok.tokenizers.kmeans import Codebook

logger = logging.getLogger(__name__)


def learn_dmel(x: np.ndarray, n_bins: int, per_channel_range: bool = False,
               feature_spec: Optional[Dict[str, Any]] = None) -> Codebook:
    """Bin centres (n_bins, C) from frames ``x`` (N, C): linspace(min, max) over all data or per channel."""
    if n_bins < 2:
        raise ValueError(f"dMel needs at least 2 bins per channel, got {n_bins}")
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"dMel: expected finite frames of shape (N, C), got {x.shape}")
    lo = x.min(axis=0) if per_channel_range else np.full(x.shape[1], x.min())
    hi = x.max(axis=0) if per_channel_range else np.full(x.shape[1], x.max())
    if np.any(hi <= lo):
        raise ValueError("dMel: a channel has no spread (max == min); cannot place bins")
    centres = np.linspace(lo, hi, n_bins, axis=0).astype(np.float32)
    bits = float(np.log2(n_bins))
    meta = {"kind": "dmel", "per_channel": True, "n_bins": n_bins, "bits": int(bits) if bits.is_integer() else bits,
            "range": "per_channel" if per_channel_range else "global",
            "min": float(lo.min()), "max": float(hi.max()), "n_frames": int(len(x)), "feature_spec": feature_spec or {}}
    return Codebook(np.ascontiguousarray(centres), meta)


def run_learn_dmel(feats: str, n_bins: int, out: str, portion: float = 1.0, seed: int = 0,
                   per_channel_range: bool = False) -> Dict[str, Any]:
    """Learn a dMel codebook from a feats.scp (log-mel, e.g. ``fbank``) and save ``out`` (.npy) + ``.yaml``."""
    t0 = time.perf_counter()
    spec = feature_spec_of(feats)
    if spec and spec.get("feature") not in ("fbank", None):
        logger.warning("dMel bins %s features; it is meant for log-mel (fbank)", spec.get("feature"))
    x = load_frames(feats, portion, seed)
    codebook = learn_dmel(x, n_bins, per_channel_range, spec)
    codebook.meta.update(portion=portion, feats=str(Path(feats).resolve()))
    codebook.save(out)
    return {"frames": int(len(x)), "channels": codebook.dim, "bins": n_bins,
            "range": f"{codebook.meta['min']:.3f}..{codebook.meta['max']:.3f}",
            "seconds": round(time.perf_counter() - t0, 1), "output": str(out)}
