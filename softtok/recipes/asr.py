"""Python stages of the token-ASR recipes: τ sweep on dev, decoding every set, results tables and plots.

    softtok asr sweep-tau --exp-dir exp/asr_hard_k128 --feats dump/dev/feats.scp --text data/dev/text
    softtok asr decode-sets --exp-dir exp/asr_hard_k128 --dump dump --data data --sets test fsdd
    softtok asr results --exp exp --out-dir .
    softtok asr render --results-dir .      # RESULTS.md again from results.json, after a change to its wording

τ is chosen on dev only (lowest dev WER, greedy CTC) from multiples of the median squared
distance of dev frames to their nearest centroid, then applied unchanged to every test set.
A τ whose dev CER is more than ``MAX_CER_RISE`` points above hard's is not eligible: lower WER
with higher CER means shorter, emptier hypotheses (fewer insertions), not better ones.
decode-sets also decodes with the label-free τ (``tau: auto``): the dev factor f* times the median
measured on each set, or each utterance, itself; results compare it with τ* and give, per set, the
share of the hard → continuous gap that soft(τ*) recovers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from softtok.common import run_job, setup_logging
from softtok.downstream.asr.decode import decode
from softtok.downstream.scoring import (MIN_GAP, UttTable, gap_share, load_per_utt, paired_bootstrap,
                                        summarize)
from softtok.downstream.training import trained_codebooks
from softtok.reporting import (commands_section, encoder_note, generated_by, pyplot, read_commands, rerender,
                                save_figure, training_summary, write_report)
from softtok.tokenizers.datadir import read_kaldi_map
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.heads import run_dir_name
from softtok.tokenizers.streams import SEP, split_list
from softtok.tokenizers.tau import (SWEEP_FILE, TAU_SCOPES, AutoTau, SweepRule, Tau, best_tau, load_sweep, run_sweep,
                                    sweep_choice, tau_grid)

logger = logging.getLogger(__name__)

DEFAULT_TAU_FACTORS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)
MAX_CER_RISE = 1.0  # CER points above hard's that disqualify a τ
ASR_RULE = SweepRule(minimise=("wer", "cer"), guard="cer", max_rise=MAX_CER_RISE)


def choose_tau(rows: Sequence[Dict[str, Any]], hard: Dict[str, float]) -> Dict[str, Any]:
    """The sweep row with the lowest dev WER (then CER) among τ whose CER stays within ``MAX_CER_RISE`` of hard's.

    Where no τ qualifies, the smallest τ (the one closest to hard decoding) is returned, marked ``eligible: False``;
    where the choice does not lower hard's dev WER, it is marked ``beats_hard: False`` and soft(τ*) is hard.
    """
    return ASR_RULE.choose(rows, hard)


def decode_dir(head: str, tau: Optional[Tau | AutoTau] = None, search: str = "greedy") -> str:
    """``decode_<head>[_tau<τ>]_<search>``: decode folders named by their settings."""
    return run_dir_name("decode", head, tau, search=search)


def sweep_tau(exp_dir: str, feats: str, text: str, factors: Sequence[float] = DEFAULT_TAU_FACTORS,
              set_name: str = "dev", search: str = "greedy") -> Dict[str, Any]:
    """Decode dev with the hard head and soft heads over the τ grid; pick τ* (:data:`ASR_RULE`)."""
    exp = Path(exp_dir)
    config = load_yaml(exp / "config.yaml")
    scale, grid = tau_grid(trained_codebooks(config, str(exp / "config.yaml")), split_list(feats), factors)

    def score(tau: Optional[Tau]) -> Dict[str, Any]:
        head = "hard" if tau is None else "soft"
        return decode(exp_dir, feats, str(exp / decode_dir(head, tau, search) / set_name), text, head,
                      None if tau is None else {"tau": tau}, search=search)

    sweep = run_sweep(grid, score, ("wer", "cer", "seconds"), ("wer", "cer"), ASR_RULE, set_name, scale)
    sweep.save(exp)
    best = sweep.best
    return {"tau": best["tau"], "factor": best["factor"], "dev_wer_soft": best["wer"], "dev_wer_hard": sweep.hard["wer"],
            "soft_is_hard": not best["beats_hard"]}


def decode_sets(exp_dir: str, dump: str, data: str, sets: Sequence[str], search: str = "greedy",
                auto_scopes: Sequence[str] = TAU_SCOPES) -> Dict[str, Any]:
    """Decode every set with the model's heads: hard, soft(τ*) and soft(auto τ, f*) per scope of ``auto_scopes`` for
    discrete models (no soft heads where no τ beat hard on dev), else continuous."""
    exp = Path(exp_dir)
    config = load_yaml(exp / "config.yaml")
    if config.get("n_tokens") is None:
        heads = [("continuous", None)]
    else:
        tau = best_tau(exp)
        heads = [("hard", None)] + ([("soft", tau)] if tau is not None else [])  # None: soft(τ*) is hard
        heads += [("soft", auto) for auto in auto_taus(load_sweep(exp), auto_scopes)]
    done = 0
    for name in sets:
        for head, tau in heads:
            out = exp / decode_dir(head, tau, search) / name
            if (out / "decode.yaml").is_file():
                continue
            feats = SEP.join(f"{d}/{name}/feats.scp" for d in split_list(dump))  # one dump folder per stream
            conf = tau.conf() if isinstance(tau, AutoTau) else {"tau": tau} if tau else None
            decode(exp_dir, feats, str(out), f"{data}/{name}/text", head, conf, search=search)
            done += 1
    return {"decoded": done, "sets": len(sets)}


def auto_taus(sweep: Dict[str, Any], scopes: Sequence[str] = TAU_SCOPES) -> List[AutoTau]:
    """The label-free τ of a model, one per scope, at its dev factor f*; none where no τ beat hard on dev."""
    if sweep_choice(sweep) is None:
        return []
    return [AutoTau(sweep["best"]["factor"], scope) for scope in scopes]


# ---------------------------------------------------------------- results

AUTO_HEADS = {f"soft_auto_{scope}": scope for scope in TAU_SCOPES}
COMPARISONS = {"soft_vs_hard": ("hard", "soft"), "soft_trained_vs_hard": ("hard", "soft_trained"),
               **{f"{h}_vs_soft": ("soft", h) for h in AUTO_HEADS}}  # name: (A, B) of the paired B − A


def collect_results(exp: str, ks: Sequence[int], sets: Sequence[str], subsets: Dict[str, Dict[str, str]],
                    search: str = "greedy", continuous: str = "asr_continuous") -> Dict[str, Any]:
    """results.json: per K, set (and subset) and head: WER/CER, τ, paired bootstraps (:data:`COMPARISONS`), the
    share of the hard → continuous gap that soft recovers, timing.

    Heads: ``hard`` and ``soft`` (τ* from dev) decode the hard-token model, ``continuous`` the
    feature model, ``soft_trained`` (when ``asr_soft_k<K>`` exists) the soft/soft model at its own τ*, and
    ``soft_auto_set`` / ``soft_auto_utterance`` (where decoded) the hard-token model at the label-free τ.
    """
    exp_path = Path(exp)
    results: Dict[str, Any] = {"K": {}, "search": search}
    cont_dir = exp_path / continuous / decode_dir("continuous", None, search)
    for k in ks:
        model = exp_path / f"asr_hard_k{k}"
        sweep = load_sweep(model)
        tau = sweep_choice(sweep)
        hard_dir = model / decode_dir("hard", None, search)
        dirs = {"hard": hard_dir, "soft": hard_dir if tau is None else model / decode_dir("soft", tau, search),
                "continuous": cont_dir}
        dirs.update({f"soft_auto_{auto.scope}": model / decode_dir("soft", auto, search) for auto in auto_taus(sweep)})
        taus = {"soft": tau}
        soft_model = exp_path / f"asr_soft_k{k}"
        if (soft_model / SWEEP_FILE).is_file():
            taus["soft_trained"] = best_tau(soft_model)  # None: no τ beat its hard decoding on dev
            dirs["soft_trained"] = soft_model / decode_dir("hard" if taus["soft_trained"] is None else "soft",
                                                           taus["soft_trained"], search)
        per_k: Dict[str, Any] = {}
        for name in sets:
            tables = {h: load_per_utt(d / name) for h, d in dirs.items() if (d / name / "per_utt.txt").is_file()}
            groups = {name: None, **{f"{name}_{sub}": utts for sub, utts in subsets.get(name, {}).items()}}
            for group, utts in groups.items():
                sel = {h: (t if utts is None else {u: t[u] for u in utts if u in t}) for h, t in tables.items()}
                entry = {h: {key: value for key, value in summarize(t).items() if key in ("wer", "cer")}
                         for h, t in sel.items()}
                for h, h_tau in taus.items():
                    if h in entry:
                        entry[h]["tau"] = h_tau
                for h in AUTO_HEADS.keys() & entry.keys():  # the set's measured τ; None per utterance
                    entry[h]["tau"] = load_yaml(dirs[h] / name / "decode.yaml")["auto_tau"]["tau"]
                per_k[group] = {**entry, **comparisons(sel)}
        times = {h: load_yaml(dirs[h] / "test" / "decode.yaml")["seconds"] for h in ("hard", "soft")
                 if (dirs[h] / "test" / "decode.yaml").is_file()}
        per_k["_decode_seconds_test"] = times
        per_k["_tau_sweep"] = sweep
        if tau is None:
            per_k["_soft_is_hard"] = True
        if "soft_trained" in taus:
            per_k["_soft_trained"] = {"train_tau": load_yaml(soft_model / "config.yaml")["head_conf"]["tau"],
                                      "tau_sweep": load_sweep(soft_model)}
        results["K"][str(k)] = per_k
    results["training"] = {model.name: training_summary(model) for model in sorted(exp_path.glob("asr_*"))
                           if (model / "history.yaml").is_file()}
    return results


def comparisons(tables: Dict[str, UttTable]) -> Dict[str, Any]:
    """The paired bootstraps of :data:`COMPARISONS` whose heads were decoded, and the share of the hard → continuous
    gap that soft recovers (:func:`~softtok.downstream.scoring.gap_share`)."""
    out = {name: paired_bootstrap(tables[a], tables[b], n_resamples=1000, seed=0)
           for name, (a, b) in COMPARISONS.items() if a in tables and b in tables}
    if {"hard", "soft", "continuous"} <= tables.keys():
        out["soft_gap_share"] = gap_share(tables["hard"], tables["soft"], tables["continuous"], 1000, seed=0)
    return out


def write_results(results: Dict[str, Any], out_dir: str, commands: str) -> None:
    """results.json, RESULTS.md (generated from it) and the τ-sweep PNG."""
    plot_tau_sweeps(results, Path(out_dir) / "tau_sweep.png")
    write_report(out_dir, results, results_markdown(results, commands))


def plot_tau_sweeps(results: Dict[str, Any], path: Path) -> None:
    """Dev WER against τ (as multiples of the median squared distance) per K, hard as a line."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for k, per_k in results["K"].items():
        sweep = per_k["_tau_sweep"]
        xs = [r["factor"] for r in sweep["sweep"]]
        line, = ax.plot(xs, [r["wer"] for r in sweep["sweep"]], marker="o", label=f"soft, K={k}")
        ax.axhline(sweep["hard"]["wer"], color=line.get_color(), linestyle="--", label=f"hard, K={k}")
    ax.set_xscale("log")
    ax.set_xlabel("τ / median squared distance to nearest centroid")
    ax.set_ylabel("dev WER (%)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


HEAD_TITLES = {"hard": "hard", "soft": "soft (τ*)", "continuous": "continuous", "soft_trained": "soft/soft (τ*)"}
DIFF_TITLES = {"soft_vs_hard": "soft − hard", "soft_trained_vs_hard": "soft/soft − hard"}


def _tau_text(tau: Optional[float | List[float]]) -> str:
    """τ (or a per-stream τ list, or per-stream scales) to 4 significant digits; None (hard) as a dash."""
    if tau is None:
        return "–"
    return "/".join(f"{t:.4g}" for t in tau) if isinstance(tau, list) else f"{tau:.4g}"


def _ci_text(ci: Optional[Dict[str, float]]) -> str:
    return f"{ci['delta']:+.2f} [{ci['ci_low']:+.2f}, {ci['ci_high']:+.2f}]" if ci else "–"


def _choice_text(sweep: Dict[str, Any]) -> str:
    """How τ* was chosen, as one sentence (older sweeps without the CER rule say lowest WER)."""
    rise = sweep.get("max_cer_rise")
    if rise is None:
        return "lowest dev WER."
    points = f"{rise:g} point{'' if rise == 1 else 's'}"
    if not sweep["best"].get("eligible", True):
        return f"no τ kept dev CER within {points} of hard's, so soft (τ*) falls back to hard."
    if sweep_choice(sweep) is None:
        return (f"lowest dev WER among τ whose dev CER is within {points} of hard's; it did not beat hard's dev WER, "
                "so soft (τ*) falls back to hard (its column repeats hard's).")
    return f"lowest dev WER among τ whose dev CER is within {points} of hard's."


def _sweep_table(sweep: Dict[str, Any]) -> List[str]:
    lines = ["| τ / median d² | τ | dev WER | dev CER |", "|---|---|---|---|"]
    lines += [f"| {r['factor']} | {_tau_text(r['tau'])} | {r['wer']:.2f} | {r['cer']:.2f} |" for r in sweep["sweep"]]
    return lines + [f"| hard | – | {sweep['hard']['wer']:.2f} | {sweep['hard']['cer']:.2f} |", ""]


def _fraction(x: float) -> str:
    return f"{x:.2f}".replace("-0.00", "0.00")


def _share_cell(entry: Dict[str, Any]) -> Tuple[float, str, bool]:
    """(hard − continuous WER, the share cell, whether it comes from the rounded WERs: a results.json without
    ``soft_gap_share``, written before it existed)."""
    share = entry.get("soft_gap_share")
    if share is None:
        wer = {h: entry[h]["wer"] for h in ("hard", "soft", "continuous")}
        gap = wer["hard"] - wer["continuous"]
        return gap, _fraction((wer["hard"] - wer["soft"]) / gap) if abs(gap) >= MIN_GAP else "–", True
    if share["share"] is None or share["ci_low"] is None:
        return share["gap"], "–", False
    interval = f"[{_fraction(share['ci_low'])}, {_fraction(share['ci_high'])}]"
    return share["gap"], f"{_fraction(share['share'])} {interval}", False


def _gap_share_section(rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """The share of the hard → continuous gap that soft (τ*) recovers, per set (nothing without all three heads)."""
    cells = {name: _share_cell(e) for name, e in rows.items() if {"hard", "soft", "continuous"} <= e.keys()}
    if not cells:
        return []
    lines = ["Share of the hard → continuous gap that soft (τ*) recovers, (hard − soft) / (hard − continuous) in WER: "
             "0 is no gain over hard, 1 reaches continuous, above 1 passes it; negative where soft is worse than hard, "
             "or where continuous is worse than hard (a negative gap) and soft gains.", "",
             "| set | hard − continuous WER | share [95 % CI] |", "|---|---|---|"]
    lines += [f"| {name} | {gap:+.2f} | {cell} |" for name, (gap, cell, _) in cells.items()]
    lines += ["", f"–: the gap is under {MIN_GAP:g} WER points (no share), or its 95 % interval comes within "
              f"{MIN_GAP:g} points of 0 (the share's interval is unbounded)."]
    if any(rounded for _, _, rounded in cells.values()):
        lines.append("Shares without an interval are computed from the rounded WERs above: this results.json "
                     "predates the bootstrap of the share over utterances, which needs the decodings' per-utterance "
                     "error counts (the next full run adds it).")
    return lines + [""]


AUTO_TITLES = {"soft_auto_set": "auto (set)", "soft_auto_utterance": "auto (utt)"}


def _auto_tau_row(name: str, entry: Dict[str, Any], heads: List[str]) -> str:
    cells = [f"{entry[h]['wer']:.2f}" if h in entry else "–" for h in ["soft", *heads]]
    if "soft_auto_set" in heads:
        cells.append(_tau_text(entry["soft_auto_set"]["tau"]) if "soft_auto_set" in entry else "–")
    cells += [_ci_text(entry.get(f"{h}_vs_soft")) for h in heads]
    return f"| {name} | " + " | ".join(cells) + " |"


def _auto_tau_section(rows: Dict[str, Dict[str, Any]], sweep: Dict[str, Any]) -> List[str]:
    """Label-free τ against τ* per set, with paired intervals and a count of their signs (nothing if not decoded)."""
    heads = [h for h in AUTO_HEADS if any(h in e for e in rows.values())]
    if not heads:
        return []
    titles = ["soft (τ*) WER"] + [f"{AUTO_TITLES[h]} WER" for h in heads]
    titles += (["τ (set)"] if "soft_auto_set" in heads else []) + [f"{AUTO_TITLES[h]} − τ* [95 % CI]" for h in heads]
    auto_rows = {name: e for name, e in rows.items() if any(h in e for h in heads)}
    lines = [f"Label-free τ: soft (τ*) keeps the τ chosen on dev; auto takes τ = f* × the median nearest squared "
             f"distance of the decoded features themselves (f* = {sweep['best']['factor']}, dev's), over the whole set "
             "(set; its τ in the table) or over each utterance (utt). auto − τ* is the paired bootstrap WER difference "
             "with its 95 % interval (negative: auto is better).", "",
             "| set | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    lines += [_auto_tau_row(name, e, heads) for name, e in auto_rows.items()] + [""]
    for h in heads:
        cis = [e[f"{h}_vs_soft"] for e in auto_rows.values() if f"{h}_vs_soft" in e]
        below, above = sum(ci["ci_high"] < 0 for ci in cis), sum(ci["ci_low"] > 0 for ci in cis)
        lines.append(f"{AUTO_TITLES[h]} − τ*: interval below 0 (auto better) on {below} of {len(cis)} rows, above 0 "
                     f"(τ* better) on {above}, containing 0 on {len(cis) - below - above}.")
    return lines + [""]


def results_markdown(results: Dict[str, Any], commands: str, generated: str = "") -> str:
    """The RESULTS.md text: one table per K plus the τ sweep, all from results.json (``generated``: the header's
    'Generated by ...' phrase, default this command now)."""
    lines = ["# Results", "", f"{generated or generated_by('softtok asr results')}; decoding: {results['search']}. "
             "WER/CER in %; soft − hard is the paired bootstrap WER difference with its 95 % interval (negative: soft "
             f"is better).{encoder_note(commands)}", ""] + commands_section(commands)
    for k, per_k in results["K"].items():
        rows = {name: entry for name, entry in per_k.items() if not name.startswith("_")}
        heads = [h for h in HEAD_TITLES if any(h in entry for entry in rows.values())]
        diffs = [d for d in DIFF_TITLES if any(d in e for e in rows.values())]
        titles = ([f"{HEAD_TITLES[h]} WER" for h in heads] + [f"{DIFF_TITLES[d]} [95 % CI]" for d in diffs]
                  + [f"{HEAD_TITLES[h]} CER" for h in heads])
        lines += [f"## K = {k}", "", "| set | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
        for name, entry in rows.items():
            cells = [f"{entry[h]['wer']:.2f}" if h in entry else "–" for h in heads]
            cells += [_ci_text(entry.get(d)) for d in diffs]
            cells += [f"{entry[h]['cer']:.2f}" if h in entry else "–" for h in heads]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        sweep = per_k["_tau_sweep"]
        times = per_k.get("_decode_seconds_test", {})
        lines += ["", f"τ* = {_tau_text(sweep['best']['tau'])} ({sweep['best']['factor']} × median squared distance "
                  f"{_tau_text(sweep['median_sqdist'])}), chosen on {sweep['set']}: "
                  + _choice_text(sweep)]
        if per_k.get("_soft_is_hard"):
            lines.append("**No τ beat hard on dev: soft (τ*) is the hard head here.**")
        if "hard" in times and "soft" in times:
            lines.append(f"Decode time on test: hard {times['hard']:.1f} s, soft {times['soft']:.1f} s "
                         f"(ratio {times['soft'] / times['hard']:.2f}).")
        lines += [""] + _gap_share_section(rows) + _auto_tau_section(rows, sweep)
        lines += ["Hard-token model, τ sweep on dev:", ""] + _sweep_table(sweep)
        if "_soft_trained" in per_k:
            soft = per_k["_soft_trained"]
            lines += [f"Soft/soft model (trained at τ = {_tau_text(soft['train_tau'])}), τ sweep on dev:", ""]
            lines += _sweep_table(soft["tau_sweep"])
    lines += ["## Training", "", "| model | epochs | averaged | best valid loss | valid acc | train time |",
              "|---|---|---|---|---|---|"]
    for name, t in results.get("training", {}).items():
        secs = f"{t['train_seconds'] / 60:.1f} min" if "train_seconds" in t else "–"
        lines.append(f"| {name} | {t['epochs']} | {t['averaged_epochs']} | {t['best_valid_loss']} "
                     f"| {t.get('best_valid_acc', '–')} | {secs} |")
    lines += ["", "![τ sweep](tau_sweep.png)", ""]
    return "\n".join(lines)


def read_subsets(data: str, spec: Sequence[str]) -> Dict[str, Dict[str, List[str]]]:
    """``SET:SUB=DIR`` items → {set: {sub: utt ids of data/DIR}} (e.g. ``test:adults=test_adults``)."""
    subsets: Dict[str, Dict[str, List[str]]] = {}
    for item in spec:
        try:
            set_name, rest = item.split(":", 1)
            sub, folder = rest.split("=", 1)
        except ValueError:
            raise ValueError(f"--subsets item {item!r} must look like SET:NAME=DATA_DIR") from None
        subsets.setdefault(set_name, {})[sub] = list(read_kaldi_map(Path(data) / folder / "wav.scp"))
    return subsets


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Token-ASR recipe stages")
    sub = p.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("sweep-tau", help="decode dev over the τ grid; write tau_sweep.yaml")
    s.add_argument("--exp-dir", required=True)
    s.add_argument("--feats", required=True)
    s.add_argument("--text", required=True)
    s.add_argument("--factors", type=float, nargs="+", default=list(DEFAULT_TAU_FACTORS))
    d = sub.add_parser("decode-sets", help="decode sets with hard, soft(τ*) and soft(auto τ) (or continuous)")
    d.add_argument("--exp-dir", required=True)
    d.add_argument("--dump", required=True, help="folder of <set>/feats.scp (a comma list: one per feature stream)")
    d.add_argument("--data", required=True, help="folder of <set>/text")
    d.add_argument("--sets", nargs="+", required=True)
    d.add_argument("--search", default="greedy", choices=["greedy", "beam"])
    d.add_argument("--auto-scopes", nargs="*", choices=TAU_SCOPES, default=list(TAU_SCOPES),
                   help="label-free τ (f* × the median nearest squared distance of the set, or of each utterance, "
                        "itself) decoded per scope (default: both; none: give the option alone)")
    r = sub.add_parser("results", help="results.json, RESULTS.md and plots")
    r.add_argument("--exp", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--ks", type=int, nargs="+", required=True)
    r.add_argument("--sets", nargs="+", required=True)
    r.add_argument("--subsets", nargs="*", default=[], help="SET:NAME=DATA_DIR, e.g. test:adults=test_adults")
    r.add_argument("--search", default="greedy")
    r.add_argument("--commands", default="", help="file with the commands that produced the results")
    r.add_argument("--out-dir", required=True)
    g = sub.add_parser("render", help="RESULTS.md again from results.json (after a wording change; nothing re-run)")
    g.add_argument("--results-dir", required=True, help="folder of results.json and the RESULTS.md to rewrite")
    return p


def _run_stage(args) -> Dict[str, Any]:
    if args.stage == "sweep-tau":
        return sweep_tau(args.exp_dir, args.feats, args.text, args.factors)
    if args.stage == "decode-sets":
        return decode_sets(args.exp_dir, args.dump, args.data, args.sets, args.search, args.auto_scopes)
    if args.stage == "render":
        return {"output": str(rerender(args.results_dir, results_markdown, "softtok asr render"))}
    results = collect_results(args.exp, args.ks, args.sets, read_subsets(args.data, args.subsets), args.search)
    write_results(results, args.out_dir, read_commands(args.commands))
    return {"output": str(Path(args.out_dir) / "RESULTS.md")}


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    return run_job(args.stage, lambda: _run_stage(args), logger)


if __name__ == "__main__":
    raise SystemExit(main())
