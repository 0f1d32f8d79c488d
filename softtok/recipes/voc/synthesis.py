"""Synthesis of sets with a model's heads, its folders named by their settings (:func:`synth_name`), and the τ
sweep on dev that picks soft's τ* (tau_sweep.yaml), then applied unchanged to every test set."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from softtok.downstream.training import trained_codebooks
from softtok.recipes.voc.evaluate import ID, OOD, Evaluator
from softtok.reporting import load_json
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.heads import run_dir_name
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import SweepRule, Tau, best_tau, run_sweep, tau_grid

logger = logging.getLogger(__name__)

DEFAULT_TAU_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0)
# --criterion -> the dev metric minimised: MCD or log-mel distance of the synthesised audio, or (model_mel) the L1
# between the model's own log-mel and the natural one, which needs no waveform (a neural mel -> wave stage is slow)
CRITERIA = {"mcd": "mcd_db", "mel": "mel_dist", "model_mel": "mel_l1"}


def synth_name(head: str, tau: Optional[Tau] = None) -> str:
    """``synth_<head>[_tau<τ>]``: synthesis folders named by their settings, as decode folders are."""
    return run_dir_name("synth", head, tau)


def _vocoder_module(config: Dict[str, Any], exp: Path) -> Any:
    """The model's vocoder module (softtok.downstream.vocoder.<vocoder>): ``synthesize``, maybe ``dev_mel_error``."""
    name = config.get("vocoder")
    if not name:
        raise ValueError(f"{exp / 'config.yaml'}: no 'vocoder' key; is this a vocoder experiment?")
    try:
        return importlib.import_module(f"softtok.downstream.vocoder.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"{exp / 'config.yaml'}: unknown vocoder {name!r}") from None


def synthesize_set(exp_dir: str | Path, feats: str, head: str, tau: Optional[Tau], set_name: str) -> Path:
    """``<exp>/synth_<head>[_tau<τ>]/<set>/`` with the model's vocoder; skipped when synth.yaml is there."""
    exp = Path(exp_dir)
    out = exp / synth_name(head, tau) / set_name
    if not (out / "synth.yaml").is_file():
        _vocoder_module(load_yaml(exp / "config.yaml"), exp).synthesize(exp_dir=str(exp), feats=feats, out_dir=str(out), head=head,
                   head_conf={"tau": tau} if tau is not None else None)
    return out


def model_heads(exp_dir: str | Path) -> List[Tuple[str, Optional[Tau]]]:
    """[(head, τ)]: hard and soft(τ* from dev) for token models, continuous for feature models."""
    exp = Path(exp_dir)
    if load_yaml(exp / "config.yaml").get("n_tokens") is None:
        return [("continuous", None)]
    tau = best_tau(exp)
    return [("hard", None)] + ([("soft", tau)] if tau is not None else [])  # None: no τ beat hard, soft(τ*) is hard


def sweep_tau(exp_dir: str, feats: str, data_dir: str, factors: Sequence[float] = DEFAULT_TAU_FACTORS,
              criterion: str = "mcd", set_name: str = "dev") -> Dict[str, Any]:
    """Score dev with the hard head and soft heads over the τ grid; τ* = lowest mean dev MCD, log-mel distance or
    (``model_mel``, no synthesis) model mel L1."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    exp = Path(exp_dir)
    config = load_yaml(exp / "config.yaml")
    if config.get("n_tokens") is None:
        raise ValueError(f"{exp}: a continuous-input model has no τ to sweep")
    scale, grid = tau_grid(trained_codebooks(config, str(exp / "config.yaml")), split_list(feats), factors)
    key = CRITERIA[criterion]
    score = _model_mel_score(exp, config, feats, data_dir) if criterion == "model_mel" else \
        _synthesis_score(exp, feats, data_dir, set_name)
    keys = (key,) if criterion == "model_mel" else ("mcd_db", "mel_dist")
    rule = SweepRule(minimise=(key, "tau"), criterion=key)
    sweep = run_sweep(grid, score, keys, keys, rule, set_name, scale)
    sweep.save(exp)
    best = sweep.best
    return {"tau": best["tau"], "factor": best["factor"], f"dev_{key}_soft": round(best[key], 4),
            f"dev_{key}_hard": round(sweep.hard[key], 4), "soft_is_hard": not best["beats_hard"]}


def _synthesis_score(exp: Path, feats: str, data_dir: str, set_name: str) -> Callable[[Optional[Tau]], Dict]:
    """score(τ): synthesise the set with hard (None) or soft(τ) and score it (MCD, log-mel distance)."""
    evaluator = Evaluator()

    def score(tau: Optional[Tau]) -> Dict[str, float]:
        out = synthesize_set(exp, feats, "hard" if tau is None else "soft", tau, set_name)
        if (out / "metrics.json").is_file():
            return load_json(out / "metrics.json")["summary"]
        return evaluator.evaluate(data_dir, out, "dev", out / "wav.scp")

    return score


def _model_mel_score(exp: Path, config: Dict[str, Any], feats: str, data_dir: str) -> Callable[[Optional[Tau]], Dict]:
    """score(τ): the model's mean dev log-mel L1 with hard (None) or soft(τ), nothing synthesised."""
    module = _vocoder_module(config, exp)
    if not hasattr(module, "dev_mel_error"):
        raise ValueError(f"{exp}: vocoder {config['vocoder']!r} predicts no mel; use --criterion mcd or mel")

    def score(tau: Optional[Tau]) -> Dict[str, float]:
        head, conf = ("hard", None) if tau is None else ("soft", {"tau": tau})
        return {"mel_l1": module.dev_mel_error(str(exp), feats, data_dir, head, conf)}

    return score


def synth_eval(exp_dir: str, dump: str, data: str, id_sets: Sequence[str], ood_sets: Sequence[str],
               speaker_ref_path: str) -> Dict[str, Any]:
    """Synthesise and score every set with the model's heads (hard + soft(τ*), or continuous)."""
    evaluator = Evaluator(speaker_ref_path)
    done = 0
    for name, kind in [(s, ID) for s in id_sets] + [(s, OOD) for s in ood_sets]:
        for head, tau in model_heads(exp_dir):
            out = synthesize_set(exp_dir, f"{dump}/{name}/feats.scp", head, tau, name)
            if not (out / "metrics.json").is_file():
                evaluator.evaluate(f"{data}/{name}", out, kind, out / "wav.scp")
                done += 1
    return {"evaluated": done, "sets": len(id_sets) + len(ood_sets)}

