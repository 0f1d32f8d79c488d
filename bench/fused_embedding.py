"""Dense soft embedding, two-step (soft head → (T, K) probabilities → p @ E) vs one fused attention call.

Each case (K, D, threads) runs in its own process, both paths after one warm-up call each:
- time: median wall seconds of ``--repeats`` calls of each path, the two paths' calls interleaved so that a
  change in the machine's load hits both alike; the share of the CPUs other processes used meanwhile (a case
  timed while they used over 20% is run again, ``--retries`` times at most, and the least disturbed run kept);
- peak memory: the rise of the process' peak resident set (VmHWM, reset through /proc/self/clear_refs) over
  its resident set before one call. glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so every large
  block is mapped and unmapped on its own and the peak is what the call held at once;
- the largest single torch allocation of one call (torch.profiler, profile_memory=True): whether a (T, K)
  matrix was built.
Inputs are random (cost does not depend on the values): clustered features, τ = the median nearest squared
distance. Writes bench/fused_embedding.json and bench/FUSED_EMBEDDING.md (atomically).

    python bench/fused_embedding.py            # 16 cases, a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PATHS = ("two_step", "fused")
MMAP_THRESHOLD = 128 * 1024


# ----------------------------------------------------------------------------- one case (in its own process)
def status_kb(key: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def build_case(k: int, dim: int, frames: int, table_dim: int):
    """Codebook, features, one-stream embedding and τ (1× the median nearest squared distance)."""
    import torch

    from softtok.downstream.embedding import TokenEmbedding
    from softtok.tokenizers.kmeans import Codebook

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(k, dim, generator=gen) + torch.randn(dim, generator=gen)
    feats = centres[torch.randint(k, (frames,), generator=gen)] + 0.5 * torch.randn(frames, dim, generator=gen)
    codebook = Codebook(centres.numpy())
    tau = float(codebook.distances(feats).min(dim=1).values.median())
    torch.manual_seed(1)
    return codebook, feats, TokenEmbedding(k, table_dim).requires_grad_(False), tau


def largest_allocation(call) -> int:
    """Bytes of the largest single torch allocation during ``call()`` (torch.profiler, profile_memory)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    return max(event.cpu_memory_usage for event in prof.events())


def peak_rise_mb(call) -> float:
    """MB by which the peak resident set rises over the resident set before ``call()``."""
    before = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    call()
    return (status_kb("VmHWM") - before) / 1024


def run_case(k: int, dim: int, threads: int, frames: int, table_dim: int, repeats: int) -> List[Dict[str, Any]]:
    """Both paths' peak memory, largest allocation and time (calls interleaved), in this process."""
    import torch

    from softtok.tokenizers.heads import build_head

    torch.set_num_threads(threads)
    codebook, feats, emb, tau = build_case(k, dim, frames, table_dim)
    head = build_head("soft", codebook, tau=tau)
    calls = {"two_step": lambda: emb(head(feats)), "fused": lambda: emb.soft_from_features(feats, codebook, tau)}
    diff = float((calls["fused"]() - calls["two_step"]()).abs().max())  # also the warm-up
    results = {path: {"path": path, "K": k, "D": dim, "threads": threads, "frames": frames, "table_dim": table_dim,
                      "tau": tau, "wall_s": []} for path in PATHS}
    results["fused"]["max_abs_diff_vs_two_step"] = diff
    for path, call in calls.items():
        results[path]["peak_rise_mb"] = round(peak_rise_mb(call), 1)
        results[path]["largest_alloc_mb"] = round(largest_allocation(call) / 2 ** 20, 2)
    own0, busy0, load0, t0 = time.process_time(), busy_seconds(), os.getloadavg()[0], time.perf_counter()
    for _ in range(repeats):
        for path, call in calls.items():
            t = time.perf_counter()
            call()
            results[path]["wall_s"].append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    other = (busy_seconds() - busy0) - (time.process_time() - own0)
    for r in results.values():
        r.update(wall_s_median=statistics.median(r["wall_s"]), loadavg_1min=[load0, os.getloadavg()[0]],
                 other_cpu_share=min(1.0, max(0.0, other / (wall * (os.cpu_count() or 1)))))
    return list(results.values())


def spawn_case(k: int, dim: int, threads: int, args: argparse.Namespace) -> List[Dict[str, Any]]:
    """:func:`run_case` in a fresh process (this checkout's softtok first, a fixed mmap threshold), run again up
    to ``args.retries`` times while other processes used over a fifth of the CPUs; the least disturbed run."""
    cmd = [sys.executable, __file__, "--case", f"{k},{dim},{threads}", "--frames", str(args.frames),
           "--table-dim", str(args.table_dim), "--repeats", str(args.repeats)]
    path_list = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "PYTHONPATH": path_list}
    runs: List[List[Dict[str, Any]]] = []
    while not runs or (runs[-1][0]["other_cpu_share"] > 0.2 and len(runs) <= args.retries):
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run[0]["other_cpu_share"])
    for r in best:
        r["runs"] = len(runs)
    return best


# ----------------------------------------------------------------------------- report
def machine_info() -> Dict[str, Any]:
    """CPU model and count, library versions."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__}


def pairs(cases: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (K, D, threads): both paths' figures and the fused / two-step ratios."""
    by_key = {(c["K"], c["D"], c["threads"], c["path"]): c for c in cases}
    rows = []
    for (k, dim, threads, path), two in sorted(by_key.items()):
        if path != "two_step" or (k, dim, threads, "fused") not in by_key:
            continue
        fused = by_key[k, dim, threads, "fused"]
        rows.append({"K": k, "D": dim, "threads": threads, "two_step": two, "fused": fused,
                     "time_ratio": fused["wall_s_median"] / two["wall_s_median"],
                     "peak_ratio": fused["peak_rise_mb"] / max(two["peak_rise_mb"], 1e-9)})
    return rows


def conclusion(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Plain sentences: where the fused call is faster, where smaller, by how much."""
    def where(pred) -> str:
        hits = [f"K={r['K']} D={r['D']} {r['threads']}t" for r in rows if pred(r)]
        return "every case measured" if len(hits) == len(rows) else ", ".join(hits) or "none"

    def spread(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{min(values):.2f}–{max(values):.2f}"

    largest = {r["K"]: r["two_step"]["largest_alloc_mb"] for r in rows}
    matrices = ", ".join(f"{mb:.1f} MB at K={k}" for k, mb in sorted(largest.items()))
    fused_largest = max(r["fused"]["largest_alloc_mb"] for r in rows)
    return [f"- Fused faster (time ratio < 1): {where(lambda r: r['time_ratio'] < 1)}; "
            f"slower: {where(lambda r: r['time_ratio'] >= 1)}. Time ratio fused / two-step {spread('time_ratio')}.",
            f"- Fused smaller at peak: {where(lambda r: r['peak_ratio'] < 1)}. Peak ratio {spread('peak_ratio')}. "
            f"The two-step path's largest single allocation is the (T, K) float32 matrix ({matrices}); the fused "
            f"call's is the output or the padded table (O(T·D + K·D)), {fused_largest:.1f} MB at most.",
            f"- Largest |fused − two-step| over all cases: "
            f"{max(r['fused']['max_abs_diff_vs_two_step'] for r in rows):.1e}."]


def contention(cases: Sequence[Dict[str, Any]]) -> List[str]:
    """A warning when other processes used a sizeable share of the CPUs while timing."""
    shares = [c["other_cpu_share"] for c in cases]
    if max(shares) < 0.2:
        return []
    return [f"Other processes used {min(shares):.0%}–{max(shares):.0%} of all CPUs while the cases were timed: the "
            "absolute times of the rows with a high share are inflated (2-thread ones most: they did not have two "
            "free cores); both paths' calls were interleaved under the same load, so the ratios are the figures "
            "to read."]


PADDING_NOTE = ("Why D = 1024 gains less: the CPU flash kernel takes q, k and v of one width, so the table is "
                "zero-padded from d to D columns; the attention's p·v then costs 2·T·K·D multiply-adds instead of "
                "p @ E's 2·T·K·d, and the call holds the padded table (K × D) and a T × D output before slicing "
                "(its largest allocation at D = 1024). Both are O(T·D + K·D), not O(T·K).")


def render_markdown(r: Dict[str, Any]) -> str:
    """FUSED_EMBEDDING.md from the JSON result."""
    m, rows = r["machine"], pairs(r["cases"])
    loads = [x for c in r["cases"] for x in c["loadavg_1min"]]
    lines = ["# Fused soft embedding: one attention call vs soft head + p @ E", "",
             f"Command: `{r['command']}`", "",
             f"Date: {r['date']}, wall time {r['wall_s'] / 60:.1f} min. Machine: {m['cpu_count']} CPUs ({m['cpu']}), "
             f"Python {m['python']}, torch {m['torch']}.", "",
             f"1-minute load average: {r['loadavg_start'][0]:.2f} at the start, {min(loads):.2f}–{max(loads):.2f} "
             f"while timing (this bench's own threads included), {r['loadavg_end'][0]:.2f} at the end. "
             "\"other CPU\" is the share of all CPUs other processes used while a case was timed (/proc/stat).", "",
             f"Sizes: T = {r['frames']} frames, d = {r['table_dim']} (embedding width), one stream, "
             f"τ = 1× the median nearest squared distance; random clustered features. Two-step: "
             "`build_head('soft', codebook, tau)` then `TokenEmbedding` on the (T, 1, K) probabilities. Fused: "
             "`TokenEmbedding.soft_from_features` (one `scaled_dot_product_attention` call; CPU flash kernel).", "",
             f"Time: median wall seconds of {r['repeats']} calls of each path after a warm-up, the two paths' calls "
             f"interleaved, each (K, D, threads) in its own process (rerun up to {r['retries']} times when other "
             "processes used over 20% of the CPUs; \"runs\" counts the tries, the least disturbed kept). "
             "Peak memory: rise of the peak resident set (VmHWM, reset via /proc/self/clear_refs) over the resident "
             f"set before one call, with glibc's mmap threshold fixed at {MMAP_THRESHOLD // 1024} kB so freed large "
             "blocks leave the resident set; includes the output (T × d floats). Largest allocation: the largest "
             "single torch allocation of one call (torch.profiler, profile_memory=True).", "",
             "| K | D | threads | two-step s | fused s | fused / two-step time | two-step peak MB | fused peak MB | "
             "two-step largest alloc MB | fused largest alloc MB | other CPU | runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        two, fused = row["two_step"], row["fused"]
        lines.append(f"| {row['K']} | {row['D']} | {row['threads']} | {two['wall_s_median']:.3f} | "
                     f"{fused['wall_s_median']:.3f} | {row['time_ratio']:.2f} | {two['peak_rise_mb']:.1f} | "
                     f"{fused['peak_rise_mb']:.1f} | {two['largest_alloc_mb']:.1f} | {fused['largest_alloc_mb']:.1f} | "
                     f"{two['other_cpu_share']:.0%} | {two.get('runs', 1)} |")
    for paragraph in [*contention(r["cases"]), *r.get("notes", [])]:
        lines += ["", paragraph]
    lines += ["", "## Conclusion", "", *conclusion(rows), "", PADDING_NOTE]
    return "\n".join(lines) + "\n"


def write(r: Dict[str, Any], out_dir: Path) -> None:
    """fused_embedding.json and FUSED_EMBEDDING.md into ``out_dir``, atomically."""
    from softtok.tokenizers.fileio import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "fused_embedding.json", json.dumps(r, indent=1) + "\n")
    atomic_write_text(out_dir / "FUSED_EMBEDDING.md", render_markdown(r))


def _ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",")]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", type=_ints, default=[1024, 4096], help="codebook sizes K (comma list)")
    p.add_argument("--dims", type=_ints, default=[384, 1024], help="feature dims D (comma list)")
    p.add_argument("--threads", type=_ints, default=[1, 2], help="torch thread counts (comma list)")
    p.add_argument("--frames", type=int, default=3000, help="frames T (3000 = 60 s at 50 Hz)")
    p.add_argument("--table-dim", type=int, default=256, help="embedding width d")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out-dir", type=Path, default=BENCH)
    p.add_argument("--render", type=Path, help="rewrite FUSED_EMBEDDING.md from this JSON, measuring nothing")
    p.add_argument("--note", action="append", default=[], help="a sentence for the report (e.g. how the run was "
                   "timed on a shared machine); repeatable")
    p.add_argument("--retries", type=int, default=2, help="reruns of a case timed while others used > 20%% CPU")
    p.add_argument("--case", help="K,D,threads: both paths in this process, JSON on stdout (internal)")
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(*_ints(args.case), args.frames, args.table_dim, args.repeats)))
        return 0
    if args.render:
        write(json.loads(args.render.read_text()), args.out_dir)
        return 0
    start, t0 = os.getloadavg(), time.perf_counter()
    cases = [case for k in args.ks for dim in args.dims for threads in args.threads
             for case in spawn_case(k, dim, threads, args)]
    command = "python bench/fused_embedding.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    result = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "wall_s": time.perf_counter() - t0, "machine": machine_info(), "frames": args.frames,
              "table_dim": args.table_dim, "repeats": args.repeats, "retries": args.retries, "notes": args.note,
              "loadavg_start": start, "loadavg_end": os.getloadavg(), "cases": cases}
    write(result, args.out_dir)
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
