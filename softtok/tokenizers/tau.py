"""τ, the soft head's temperature: its scale, the sweep grid, its folder tag, and the sweep that chooses τ*.

τ is expressed in multiples of a *scale*, the median squared distance of (dev) frames to their nearest centre
(over channels too for a per-channel codebook), so one list of factors means the same sharpness whatever the
feature scale or K. A model with several sources gets one scale, hence one τ, per source. A sweep decodes or
synthesises dev with the hard head and with soft heads over the grid; its :class:`SweepRule` picks τ*, and
``tau_sweep.yaml`` records the grid, the metrics and the choice. :class:`AutoTau` is the label-free variant: the dev
factor f* times the median measured on the input's own frames (the whole set decoded, or each utterance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from softtok.common import positive_float
from softtok.tokenizers.fileio import iter_scp, load_yaml, save_yaml
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import nearest_sqdist

logger = logging.getLogger(__name__)

Tau = Union[float, List[float]]  # one τ, or one per source
SWEEP_FILE = "tau_sweep.yaml"
TAU_SCOPES = ("set", "utterance")  # what an automatic τ's median is measured over


def format_number(x: float) -> str:
    """A number as folder names write it: ``%g`` without the exponent's ``+``."""
    return f"{x:g}".replace("+", "")


def tau_tag(tau: "Tau | AutoTau") -> str:
    """``tau`` as folder names write it: ``2.9``, per source ``2.9-3.1-4``, automatic ``auto-set-f0.1``."""
    if isinstance(tau, AutoTau):
        return tau.tag()
    taus = tau if isinstance(tau, (list, tuple)) else [tau]
    return "-".join(format_number(float(t)) for t in taus)


def check_tau(tau: Any) -> float:
    """τ as a float; anything but a finite number > 0 (a bool, a string, NaN, 0) is a one-line error."""
    return positive_float(tau, "soft head: tau")


def median_nearest_sqdist(codebook: Codebook, feats_scp: str, max_frames: int = 200_000,
                          nearest: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> float:
    """Median over frames (and channels, if per-channel) of ‖x − c_nearest‖²: the scale τ is expressed in.

    Reads utterances of ``feats_scp`` in order until ``max_frames`` frames are seen. ``nearest`` maps a
    (T, D) matrix to its nearest squared distances (default: :func:`~softtok.tokenizers.streams.nearest_sqdist`).
    """
    nearest = nearest or (lambda x: nearest_sqdist(codebook, x))
    mins, n = [], 0
    for _, mat in iter_scp(feats_scp):
        mins.append(nearest(torch.from_numpy(np.array(mat, dtype=np.float32))))
        n += len(mat)
        if n >= max_frames:
            break
    return float(torch.cat(mins).median())


def tau_scales(codebooks: Sequence[Codebook], feats: Sequence[str]) -> List[float]:
    """The scale of each source (its codebook over its own feats.scp): τ = factor × scale, one τ per source."""
    if len(codebooks) != len(feats):
        raise ValueError(f"{len(codebooks)} codebooks for {len(feats)} feature streams")
    return [median_nearest_sqdist(cb, f) for cb, f in zip(codebooks, feats)]


def tau_of(factor: float, scale: float) -> float:
    """τ = factor × scale to 4 significant digits: short, stable folder names (``..._tau2.9``); the factor, the scale
    and τ itself must be finite numbers > 0 (``tau_factor: true`` is not 1)."""
    tau = float(f"{positive_float(factor, 'tau factor') * positive_float(scale, 'tau scale'):.4g}")
    return check_tau(tau)


def one_or_list(values: Sequence[Any]) -> Any:
    """A single source's value alone, several sources' as a list (how configs and sweeps write τ and scales)."""
    return values[0] if len(values) == 1 else list(values)


def as_list(value: Any) -> Optional[List[int]]:
    """The inverse of :func:`one_or_list` for sizes: an int, or one per source or stream, as a list of ints (None
    stays None)."""
    if value is None:
        return None
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def taus_of(factor: float, scales: Sequence[float]) -> Tau:
    """τ of every source for one factor: a float for one source, a list for several."""
    return one_or_list([tau_of(factor, s) for s in scales])


class DegenerateTau(ValueError):
    """An automatic τ that cannot be measured: no frames, or a median nearest squared distance of 0."""


def median_scale(nearest: torch.Tensor) -> float:
    """The median of nearest squared distances (torch's: the lower middle value for an even count), as the dev scale.

    No frames, or a median of 0 (most frames on a centre: τ = f × 0 would be the hard head, not a soft one; no
    floor is invented for it), is a one-line :class:`DegenerateTau` error.
    """
    if nearest.numel() == 0:
        raise DegenerateTau("tau auto: no frames to measure the median nearest squared distance on")
    median = float(nearest.median())
    if not median > 0:
        raise DegenerateTau(f"tau auto: the median nearest squared distance is {median:g}, so τ would be 0 "
                            "(the hard head): refused; decode with the hard head or a fixed τ")
    return median


@dataclass(frozen=True)
class AutoTau:
    """Label-free τ: ``factor`` (f*, the dev sweep's best) × the median nearest squared distance of the frames being
    tokenised, over the whole set (``set``) or each utterance on its own (``utterance``); one τ per source."""

    factor: float
    scope: str = "set"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", positive_float(self.factor, "tau factor"))
        if self.scope not in TAU_SCOPES:
            raise ValueError(f"tau scope {self.scope!r}: choose from {list(TAU_SCOPES)}")

    def tag(self) -> str:
        """Folder names' form: ``auto-set-f0.1``."""
        return f"auto-{self.scope}-f{format_number(self.factor)}"

    def conf(self) -> Dict[str, Any]:
        """The head options that ask for it (``--head-conf``, decode.yaml)."""
        return {"tau": "auto", "tau_factor": self.factor, "tau_scope": self.scope}

    def taus(self, nearest: Sequence[torch.Tensor]) -> List[float]:
        """τ of each source from its frames' nearest squared distances (one flat tensor per source), as
        :func:`tau_of` rounds it."""
        return [tau_of(self.factor, median_scale(d)) for d in nearest]


def tau_grid(codebooks: Sequence[Codebook], feats: Sequence[str],
             factors: Sequence[float]) -> Tuple[Any, List[Tuple[float, Tau]]]:
    """(scale, [(factor, τ), ...]) of a τ sweep; per-source scales and τ lists for several sources."""
    scales = tau_scales(codebooks, feats)
    return one_or_list(scales), [(f, taus_of(f, scales)) for f in factors]


@dataclass(frozen=True)
class SweepRule:
    """How τ* is chosen: the row that minimises ``minimise`` (keys compared in order) among eligible rows.

    With a ``guard`` metric, a row is eligible when its guard stays within ``max_rise`` of the hard head's;
    if none is, the smallest τ (the closest to hard) is taken and marked ``eligible: false``. The choice is marked
    ``beats_hard`` when it is eligible and its first ``minimise`` metric is below hard's; where not, soft(τ*) is
    the hard head (:func:`best_tau` returns None). ``criterion`` names the metric in the record (the vocoder
    sweeps write it).
    """

    minimise: Tuple[str, ...]
    guard: Optional[str] = None
    max_rise: float = 0.0
    criterion: Optional[str] = None

    def choose(self, rows: Sequence[Dict[str, Any]], hard: Dict[str, float]) -> Dict[str, Any]:
        def key(row: Dict[str, Any]) -> Tuple:
            return tuple(row[k] for k in self.minimise)

        if self.guard is None:
            best = dict(min(rows, key=key))
        else:
            eligible = [r for r in rows if r[self.guard] <= hard[self.guard] + self.max_rise]
            best = ({**min(eligible, key=key), "eligible": True} if eligible
                    else {**min(rows, key=lambda r: _first_tau(r["tau"])), "eligible": False})
        metric = self.minimise[0]
        best["beats_hard"] = bool(best.get("eligible", True) and metric in hard and best[metric] < hard[metric])
        return best


@dataclass
class TauSweep:
    """One sweep on a dev set: the scale, the hard head's metrics, one row per τ (factor, τ, metrics) and the rule."""

    set: str
    scale: Any
    hard: Dict[str, float]
    rows: List[Dict[str, Any]]
    rule: SweepRule

    @property
    def best(self) -> Dict[str, Any]:
        return self.rule.choose(self.rows, self.hard)

    def record(self) -> Dict[str, Any]:
        """The ``tau_sweep.yaml`` contents (results.json embeds them)."""
        out: Dict[str, Any] = {"set": self.set}
        if self.rule.criterion:
            out["criterion"] = self.rule.criterion
        out.update(median_sqdist=self.scale, hard=self.hard)
        if self.rule.guard:
            out[f"max_{self.rule.guard}_rise"] = self.rule.max_rise
        return {**out, "sweep": self.rows, "best": self.best}

    def save(self, exp_dir: str | Path) -> Path:
        """Write ``<exp_dir>/tau_sweep.yaml``; warns when no τ beats hard (soft(τ*) is then the hard head)."""
        best = self.best
        if best.get("eligible") is False:
            logger.warning("no τ keeps dev %s within %s of hard's %s: soft(τ*) falls back to hard", self.rule.guard,
                           format_number(self.rule.max_rise), format_number(self.hard[self.rule.guard]))
        elif not best["beats_hard"]:
            metric = self.rule.minimise[0]
            logger.warning("no τ beats hard's dev %s (%s; best soft %s at τ = %s): soft(τ*) falls back to hard",
                           metric, self.hard.get(metric, "not measured"), best[metric], tau_tag(best["tau"]))
        path = Path(exp_dir) / SWEEP_FILE
        save_yaml(path, self.record())
        return path


def run_sweep(grid: Sequence[Tuple[float, Tau]], score: Callable[[Optional[Tau]], Dict[str, float]],
              row_keys: Sequence[str], hard_keys: Sequence[str], rule: SweepRule, set_name: str,
              scale: Any) -> TauSweep:
    """Score the hard head (``score(None)``) and each τ of ``grid``; rows keep ``row_keys`` of each score."""
    hard_scores = score(None)
    rows = []
    for factor, tau in grid:
        res = score(tau)
        rows.append({"factor": factor, "tau": tau, **{k: res[k] for k in row_keys}})
        logger.info("τ = %s (%.3g × median d²): %s", tau_tag(tau), factor,
                    ", ".join(f"dev {k} {res[k]:.4g}" for k in hard_keys))
    return TauSweep(set_name, scale, {k: hard_scores[k] for k in hard_keys}, rows, rule)


def load_sweep(exp_dir: str | Path) -> Dict[str, Any]:
    """An experiment's ``tau_sweep.yaml``; missing is a one-line error (τ is chosen on dev only)."""
    path = Path(exp_dir) / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run sweep-tau on dev first (τ is chosen on dev only)")
    return load_yaml(path)


def best_tau(exp_dir: str | Path) -> Optional[Tau]:
    """τ* of an experiment's sweep, or None where no τ beat hard on dev (soft(τ*) is then the hard head)."""
    return sweep_choice(load_sweep(exp_dir))


def dev_factor(exp_dir: str | Path) -> float:
    """f*, the factor of an experiment's τ* (what ``tau: auto`` multiplies by default); a one-line error where no τ
    beat hard on dev (there is no f* then)."""
    sweep = load_sweep(exp_dir)
    if sweep_choice(sweep) is None:
        raise ValueError(f"{Path(exp_dir) / SWEEP_FILE}: no τ beat hard on dev, so there is no f* for tau auto; "
                         "give a tau factor")
    return float(sweep["best"]["factor"])


def sweep_choice(sweep: Dict[str, Any]) -> Optional[Tau]:
    """τ* of a sweep record, or None where its best soft τ did not beat hard (records before that rule: τ*)."""
    best = sweep["best"]
    return best["tau"] if best.get("beats_hard", True) else None


def _first_tau(tau: Tau) -> float:
    """A τ (or the first of a per-source list) for ordering rows by closeness to hard."""
    return tau[0] if isinstance(tau, list) else tau
