"""INFERENCE.md from bench/inference.py's record: setup, commands, per-stage tables and the soft / hard verdicts.

Text below the notes marker of an existing INFERENCE.md (the hand-written reading of the figures) is kept when the
file is regenerated, so the figures can be re-measured without losing it:

    python bench/inference_report.py bench/inference.json      # rewrites bench/INFERENCE.md beside it
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

GOAL = 1.05
STAGES = ("read", "features", "head", "model", "search")
NOTES_MARKER = "<!-- notes: hand-written below this line; kept when bench/inference_report.py regenerates -->"


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def set_table(name: str, res: Dict[str, Any]) -> List[str]:
    """Markdown rows of one input set: median seconds per stage, end to end, RTF, × hard."""
    lines = [f"### {name}: {res['inputs']} input(s), {res['windows']} window(s), {res['audio_s'] / 60:.1f} min of "
             f"audio; {len(res['repeats'])} repeat(s); 1/5/15-min load {res['loadavg_at_start']} at start "
             f"(after waiting {res['waited_s']:g} s), {res['loadavg_at_end']} at end", "",
             "| model | head | read | features | head (call) | model (embed) | search | end to end | RTF | × hard |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, block in res["models"].items():
        for head, row in block["heads"].items():
            s, ratio = row["seconds"], block["ratios"].get(head, {}).get("e2e", 1.0)
            lines.append(f"| {label} | {head} | {fmt(s['read'])} | {fmt(s['features'])} | {fmt(s['head'])} "
                         f"({fmt(s['head.call'])}) | {fmt(s['model'])} ({fmt(s['model.embed'])}) | "
                         f"{fmt(s['search'])} | {fmt(row['e2e_s'])} | {row['e2e_rtf']:.4f} | {ratio:.3f} |")
    return lines + ["", *verdicts(res), ""]


def verdicts(res: Dict[str, Any]) -> List[str]:
    """One plain sentence per model: the goal, the head-dependent part, what dominates."""
    out = []
    for label, block in res["models"].items():
        parts = []
        for head, r in block["ratios"].items():
            runs = ", ".join(f"{x:.3f}" for x in r["e2e_per_repeat"])
            parts.append(f"{head} / hard = {r['e2e']:.3f} end to end ({'holds' if r['goal_holds'] else 'FAILS'}; "
                         f"per repeat {runs}); head + model + search alone {r['head_model_search']:.2f}×")
        dom = {h: row["dominant"] for h, row in block["heads"].items()}
        share = "; ".join(f"{h}: {d['stage']} {100 * d['shares'][d['stage']]:.0f}%" for h, d in dom.items())
        out.append(f"- **{label}**: goal soft ≤ {GOAL}× hard: " + "; ".join(parts) + f". Largest stage: {share}.")
    return out


def direct_table(direct: Dict[str, Dict[str, Any]], audio_s: float) -> List[str]:
    lines = ["| model | head | transcribe() median s | RTF | × hard | runs (s) | text = staged |",
             "|---|---|---|---|---|---|---|"]
    for label, heads in direct.items():
        hard = heads.get("hard", {}).get("median_s")
        for head, rec in heads.items():
            ratio = f"{rec['median_s'] / hard:.3f}" if hard else "–"
            runs = ", ".join(f"{x:.2f}" for x in rec["seconds"])
            lines.append(f"| {label} | {head} | {rec['median_s']:.2f} | {rec['median_s'] / audio_s:.4f} | {ratio} "
                         f"| {runs} | {rec.get('same_text_as_staged')} |")
    return lines


def models_table(record: Dict[str, Any]) -> List[str]:
    lines = ["| model | bundle | parameters | K | encoder (embed dim) | weights | load s | heads |",
             "|---|---|---|---|---|---|---|---|"]
    for label, info in record["models"].items():
        heads = "; ".join(f"{h}: {json.dumps(c)}" for h, c in record["head_settings"][label].items())
        lines.append(f"| {label} | `{info['bundle']}` | {info['parameters'] / 1e6:.2f} M | {info['K']} | "
                     f"{info['encoder']} ({info['embed_dim']}) | {'random' if info['random_weights'] else 'trained'}"
                     f" | {record['load_s'][label]} | {heads} |")
    return lines


def long_line(long: Optional[Dict[str, Any]]) -> List[str]:
    """The setup line that says what the long recording is."""
    if not long:
        return []
    made = (f"the first {long['utterances']} utterances of `{long['source']}` in order, concatenated "
            f"({long['seconds']:g} s)" if "utterances" in long else "")
    return [f"- Long recording: `{long['path']}`, one 16 kHz 16-bit WAV file: {made or 'given by --long-audio'}; "
            "cut into windows by `split_windows` as transcribe cuts it."]


def markdown(record: Dict[str, Any]) -> str:
    """INFERENCE.md from the record: setup, commands, per-stage tables, verdicts."""
    m, a = record["machine"], record["args"]
    gpu = ("A GPU was visible; see the device column." if m["cuda_visible"] else
           "No GPU was lent to this task: CPU figures only (the script times CUDA with `--device cuda`, "
           "synchronising around every stage).")
    lines = ["# Cost of the inference path: hard, soft dense and soft top-k from audio", "",
             f"Generated by `bench/inference.py` (commit {m['commit']}, {m['date']}); the figures are in "
             "`inference.json`. Wall seconds per stage, median over repeats; RTF = seconds / seconds of audio "
             "(below 1: faster than real time).", "",
             "## Setup", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']} with {m['torch_threads']} threads, "
             f"CTranslate2 {m['ctranslate2']} with {m['ctranslate2_threads']} intra threads; device "
             f"`{a['device']}`. {gpu}",
             f"- Quiet machine: each set waits (at most {a['max_wait']:g} s) for the 1-minute load average to fall to "
             f"{a['max_load']:g} or less; the load at its start and end is in its heading.",
             "- Features: Whisper tiny.en's encoder (CTranslate2, last layer, 384-dim, 50 frames/s), the offline "
             "stand-in for an SSL encoder (HuBERT/WavLM, which the full recipes use and which cost more per second "
             "of audio: see FULL_SCALE_COST.md).",
             "- Stages as `softtok transcribe` runs them: read (decode + resample to 16 kHz + cut into windows), "
             "features, head (the head per utterance + padding into batches; its call alone in brackets), model "
             "(`TokenASR.encode`: token embedding in brackets, then the encoder), search (greedy CTC: argmax, "
             "collapse, characters). read and features do not depend on the head and run once per repeat; a head's "
             "end to end is the sum of the five stages in one repeat.",
             "- Heads: hard; soft (dense, as transcribe runs it: on CPU one fused call from the features, "
             "`TokenASR.encode_soft_features`, so its head stage only pads the features, its call is 0 and its "
             "embedding in brackets is the soft assignment and Σ p E together); soft_twostep (dense, the soft head "
             "then `TokenEmbedding` on the (T, K) probabilities: the path before the fused call); soft_topk (the "
             "k nearest centres, renormalised).",
             f"- Batches of at most {a['batch_frames']} padded frames (transcribe's default).",
             *long_line(record.get("long_recording")), "",
             *models_table(record), "", "## Commands", "", "```bash", *record["commands"], "```", "",
             "## Results", ""]
    for name, res in record["sets"].items():
        lines += set_table(name, res)
    if record.get("e2e_direct"):
        lines += ["### long recording, `ASRModel.transcribe([path])` timed whole per head", "",
                  *direct_table(record["e2e_direct"], record["sets"]["long"]["audio_s"]), ""]
    return "\n".join(lines) + "\n"


def kept_notes(md_path: Path) -> str:
    """The hand-written notes of an existing INFERENCE.md (the marker and below), or the bare marker."""
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    return text[text.index(NOTES_MARKER):] if NOTES_MARKER in text else NOTES_MARKER + "\n"


def write_outputs(record: Dict[str, Any], out_dir: Path, write_json: bool = True) -> Path:
    """``inference.json`` and ``INFERENCE.md`` (its notes kept) in ``out_dir``, each written whole then renamed."""
    from softtok.tokenizers.fileio import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "INFERENCE.md"
    files = [(md, markdown(record) + "\n" + kept_notes(md))]
    if write_json:
        files.append((out_dir / "inference.json", json.dumps(record, indent=1) + "\n"))
    for path, text in files:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    return md


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/inference_report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("record", help="inference.json written by bench/inference.py")
    args = p.parse_args(argv)
    path = Path(args.record)
    print(write_outputs(json.loads(path.read_text(encoding="utf-8")), path.parent, write_json=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

