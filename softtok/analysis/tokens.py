"""What the ASR model sees, measured against frame-level phone labels.

Per token model (a TokenASR trained on hard k-means tokens, ``asr_hard_k<K>``): the hard input
E[id], the soft input Σ_k p_k E_k at the model's τ* (``tau_sweep.yaml``, as results.json records
it), each one's phone separability and RankMe, and the tokens' phone/cluster purity and PNMI, hard
and soft. The continuous features (and, given the continuous model, its input projection W x + b)
get separability and RankMe too. One pass over the features serves every metric.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from softtok.analysis.metrics import Contingency, GramStats, ScatterStats, purity_pnmi
from softtok.downstream.asr.train import load_trained
from softtok.tokenizers.datadir import DataError, evenly_spaced, read_kaldi_map
from softtok.tokenizers.fileio import iter_scp, read_scp_entries
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.jobs import feature_spec_of
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.tau import load_sweep

logger = logging.getLogger(__name__)


def read_labels(path: str, exclude: Sequence[str] = ()) -> Dict[str, List[str]]:
    """utt -> one label per frame, from an ``utt PH PH ...`` file (``softtok align``'s phones.txt)."""
    labels = {u: v.split() for u, v in read_kaldi_map(Path(path)).items()}
    if exclude and not any(set(exclude) & set(v) for v in labels.values()):
        logger.warning("%s: none of the excluded labels %s occur", path, list(exclude))
    return labels


class Representation:
    """Separability and RankMe accumulators of one frame representation."""

    def __init__(self, n_classes: int, **info: Any):
        self.scatter, self.gram, self.info, self.dim = ScatterStats(n_classes), GramStats(), info, 0

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.scatter.update(x, labels)
        self.gram.update(x)
        self.dim = int(x.shape[1])

    def result(self) -> Dict[str, Any]:
        return {**self.info, **self.scatter.result(), "rankme": self.gram.rankme(), "dim": self.dim}


class TokenModel:
    """A hard-token ASR model's codebook, embedding table and τ*: hard/soft inputs and token statistics."""

    def __init__(self, exp_dir: str, n_classes: int, tau: Optional[float] = None):
        model, config, _ = load_trained(exp_dir)
        if config.get("n_tokens") is None:
            raise ValueError(f"{exp_dir}: not a token model (continuous input)")
        self.name, self.embedding = Path(exp_dir).name, model.embedding
        self.codebook = Codebook.load(config["kmeans"])
        self.k = self.codebook.n_clusters
        self.tau = tau if tau is not None else self._tau_star(Path(exp_dir))
        self.soft = build_head("soft", self.codebook, tau=self.tau)
        self.joint = {"hard": Contingency(n_classes, self.k), "soft": Contingency(n_classes, self.k)}
        self.inputs = {"hard": Representation(n_classes, model=self.name, K=self.k, head="hard"),
                       "soft": Representation(n_classes, model=self.name, K=self.k, head="soft", tau=self.tau)}

    @staticmethod
    def _tau_star(exp: Path) -> float:
        try:
            return float(load_sweep(exp)["best"]["tau"])  # the best soft τ, also where it did not beat hard
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc} (or give --taus)") from None

    @torch.inference_mode()
    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        logits = self.soft.logits(x)  # (T, 1, K) −(d² − min d²)/τ: its argmax is the hard id
        ids, probs = logits.argmax(2), torch.softmax(logits, dim=2)
        self.joint["hard"].update(labels, ids=ids[:, 0])
        self.joint["soft"].update(labels, probs=probs[:, 0])
        self.inputs["hard"].update(self.embedding(TokenInput("ids", ids=ids)), labels)
        self.inputs["soft"].update(self.embedding(TokenInput("probs", probs=probs)), labels)

    def result(self) -> Dict[str, Any]:
        return {"model": self.name, "K": self.k, "tau": self.tau,
                "purity": {h: purity_pnmi(c.counts) for h, c in self.joint.items()},
                "inputs": {h: r.result() for h, r in self.inputs.items()}}


class ContinuousInput:
    """The continuous model's input projection W x + b (what its encoder sees)."""

    def __init__(self, exp_dir: str, n_classes: int):
        model, config, _ = load_trained(exp_dir)
        if config.get("feat_dim") is None:
            raise ValueError(f"{exp_dir}: not a continuous-input model")
        self.embedding = model.embedding
        self.rep = Representation(n_classes, model=Path(exp_dir).name, head="continuous (W x + b)")

    @torch.inference_mode()
    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.rep.update(self.embedding(TokenInput("feats", feats=x)), labels)


def analyze_tokens(feats: str, labels_path: str, models: Sequence[str] = (), continuous_model: Optional[str] = None,
                   taus: Optional[Sequence[float]] = None, exclude: Sequence[str] = (),
                   max_utts: Optional[int] = None) -> Dict[str, Any]:
    """analysis.json contents: separability/RankMe of every input representation, purity/PNMI per K."""
    if taus is not None and len(taus) != len(models):
        raise ValueError(f"--taus gives {len(taus)} values for {len(models)} models")
    labels = read_labels(labels_path, exclude)
    inventory = sorted({p for v in labels.values() for p in v} - set(exclude))
    index = {p: i for i, p in enumerate(inventory)}
    keys = [k for k, _ in read_scp_entries(feats) if k in labels]
    if not keys:
        raise DataError(f"{labels_path}: no utterance of {feats} has labels")
    chosen = set(evenly_spaced(keys, max_utts) if max_utts else keys)
    token_models = [TokenModel(m, len(inventory), None if taus is None else taus[i]) for i, m in enumerate(models)]
    for m in token_models:
        m.codebook.check_spec(feature_spec_of(feats), source=feats)
    features = Representation(len(inventory), head="continuous (features)")
    cont = ContinuousInput(continuous_model, len(inventory)) if continuous_model else None
    frames, dropped = 0, 0
    for utt, mat in iter_scp(feats):
        if utt not in chosen:
            continue
        x, y = _frames(utt, mat, labels[utt], index, labels_path)
        dropped += len(labels[utt]) - len(y)
        frames += len(y)
        if not len(y):
            continue
        features.update(x, y)
        for part in ([cont] if cont else []) + token_models:
            part.update(x, y)
    counts = Counter(p for u in chosen for p in labels[u] if p in index)
    inputs = [features.result()] + ([cont.rep.result()] if cont else [])
    return {"feats": str(feats), "feature_spec": feature_spec_of(feats), "labels": str(labels_path),
            "utts": len(chosen), "frames": frames, "excluded": list(exclude), "excluded_frames": dropped,
            "phones": len(inventory), "phone_frames": {p: counts[p] for p in inventory},
            "continuous": inputs, "tokens": [m.result() for m in token_models]}


def _frames(utt: str, mat: np.ndarray, labels: List[str], index: Dict[str, int], labels_path: str):
    """(features, label indices) of the frames whose label is kept; the label count must match the frames."""
    if len(labels) != len(mat):
        raise DataError(f"{labels_path}: utterance {utt!r} has {len(labels)} labels for {len(mat)} feature frames")
    keep = [t for t, p in enumerate(labels) if p in index]
    x = torch.from_numpy(np.asarray(mat, dtype=np.float32)[keep])
    return x, torch.tensor([index[labels[t]] for t in keep], dtype=torch.long)
