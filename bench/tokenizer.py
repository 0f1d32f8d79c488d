"""Tokenizer benchmark: k-means backends (faiss vs sklearn) and assignment heads on real speech.

One run: dump whisper + mfcc features of speechocean762 train utterances (cached under
bench/work/), time k-means (faiss vs sklearn MiniBatchKMeans) at several K, time the hard,
soft dense and soft top-k heads, measure dense vs top-k memory and the probability mass
top-k keeps, then write bench/RESULTS.md and bench/results.json (atomically).

    python bench/tokenizer.py                 # full default run (~20-30 min on 2 cores)
    python bench/tokenizer.py --max-utts 100  # quick check
    python bench/tokenizer.py --device cuda --out-dir bench/gpu  # on a GPU machine with faiss-gpu: faiss k-means
                                                                # on all visible GPUs, features and heads on CUDA
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from softtok.common import jsonable
from softtok.tokenizers.datadir import load_data_dir, write_data_dir
from softtok.tokenizers.fileio import atomic_write_text, iter_scp
from softtok.tokenizers.heads import TokenInput, build_head
from softtok.tokenizers.kmeans import Codebook, faiss_gpus, learn_faiss, learn_kmeans

logger = logging.getLogger("bench.tokenizer")

BENCH = Path(__file__).resolve().parent
CORPUS = BENCH.parent.parent / "shared" / "data" / "speechocean762"  # ../shared/data beside the checkout
# 1,000 of the 2,500 train utts (208k whisper frames = 200 per centroid at K=1024; 414k mfcc frames):
# ~15-20 min on 2 idle cores, leaving room for contention within 20-30 min. faiss time grows with the
# frames (50 full Lloyd passes), so all 2,500 utts would take ~35 min. sklearn's 20 k-means++ inits
# use 30,000 frames whatever the total.
DEFAULT_MAX_UTTS = 1000
TAU_FACTORS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
GOALS = {"speedup": 4.0, "inertia_ratio": 1.01, "soft_vs_hard": 1.5, "mem_ratio": 0.05, "mass": 0.999}

Utts = List[Tuple[str, np.ndarray]]


# ----------------------------------------------------------------------------- machine
def set_threads(n: int) -> None:
    """Use ``n`` threads in torch, faiss (OpenMP) and sklearn/numpy (OpenMP, BLAS) alike."""
    import faiss
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(limits=n)


def _busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (/proc/stat)."""
    v = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Context manager: wall seconds, and the share of all cores that *other* processes used meanwhile."""

    wall = foreign = 0.0

    def __enter__(self) -> "CpuMeter":
        self._t, self._own, self._busy = time.perf_counter(), time.process_time(), _busy_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._t
        other = (_busy_seconds() - self._busy) - (time.process_time() - self._own)
        self.foreign = max(0.0, other / (self.wall * (os.cpu_count() or 1)))


# ----------------------------------------------------------------------------- features
def make_data_dir(corpus: Path, split: str, max_utts: int, out: Path) -> Path:
    """A copy of ``corpus/split`` with absolute audio paths, keeping ``max_utts`` evenly spaced utts."""
    src = load_data_dir(corpus / split)
    utts = src.utt_ids
    n = min(max_utts, len(utts))
    keep = [utts[i] for i in np.unique(np.linspace(0, len(utts) - 1, n).round().astype(int))]
    wav_scp = {u: str((corpus / src.wav_scp[u]).resolve()) for u in keep}
    utt2spk = {u: src.utt2spk[u] for u in keep} if src.utt2spk else None
    write_data_dir(out, wav_scp, utt2spk=utt2spk)
    return out


def prepare_features(data_dir: Path, feature: str, out_dir: Path, nj: int,
                     device: Optional[str] = None) -> Dict[str, Any]:
    """Dump features with the ``softtok dump-features`` CLI (own process) unless feats.scp exists."""
    if (out_dir / "feats.scp").is_file():
        logger.info("features cached: %s", out_dir / "feats.scp")
        return {"cached": True}
    cli = Path(sys.executable).with_name("softtok")
    cmd = [str(cli), "dump-features", "--data-dir", str(data_dir), "--feature", feature,
           "--out-dir", str(out_dir), "--nj", str(nj)] + (["--device", device] if device else [])
    logger.info("running %s", shlex.join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"cached": False, "seconds": round(time.perf_counter() - t0, 1)}


def load_utts(feats_scp: Path) -> Utts:
    """All utterances of a feats.scp as (key, float32 (T, D)) pairs."""
    return [(k, np.array(m, dtype=np.float32)) for k, m in iter_scp(feats_scp)]  # writable copies


# ----------------------------------------------------------------------------- k-means
def run_kmeans(x: np.ndarray, k: int, backend: str, seed: int, **options: Any) -> Dict[str, Any]:
    """Train one codebook; its meta gives train time and inertia on all of ``x``."""
    logger.info("k-means %s K=%d on %s %s", backend, k, x.shape, options or "(defaults)")
    with CpuMeter() as meter:
        cb = learn_kmeans(x, k, backend=backend, seed=seed, **options)
    res = {"backend": backend, "K": k, "options": options, "seconds": cb.meta["train_seconds"],
           "inertia": cb.meta["inertia"], "foreign_cpu": meter.foreign, "codebook": cb}
    logger.info("  -> %.1f s, inertia %.6g (other processes used %.0f%% of the CPUs)", res["seconds"],
                res["inertia"], 100 * meter.foreign)
    return res


def kmeans_section(frames: Dict[str, np.ndarray], ks: Sequence[int], seed: int, niter_sweep: Sequence[int],
                   faiss_opts: Optional[Dict[str, Any]] = None
                   ) -> Tuple[List[Dict[str, Any]], Dict[Tuple[str, int], Codebook]]:
    """faiss (default options, plus ``faiss_opts`` such as ``gpu``) vs sklearn (defaults) per feature and K.

    Where the default misses the goal, faiss is re-run with the sweep's niter values below the
    default if it was too slow, and above it if its inertia was too high.
    """
    rows, codebooks = [], {}
    default_niter = inspect.signature(learn_faiss).parameters["niter"].default
    for feat, x in frames.items():
        for k in ks:
            fa = run_kmeans(x, k, "faiss", seed, **(faiss_opts or {}))
            sk = run_kmeans(x, k, "sklearn", seed)
            codebooks[(feat, k)] = fa.pop("codebook")
            sk.pop("codebook")
            row = {"feature": feat, "K": k, "frames": int(len(x)), "dim": int(x.shape[1]),
                   "faiss_s": fa["seconds"], "sklearn_s": sk["seconds"],
                   "faiss_inertia": fa["inertia"], "sklearn_inertia": sk["inertia"],
                   "foreign_cpu": max(fa["foreign_cpu"], sk["foreign_cpu"]), "sweep": []}
            row.update(_kmeans_goal(row["faiss_s"], row["sklearn_s"], row["faiss_inertia"], row["sklearn_inertia"]))
            fewer = [n for n in niter_sweep if n < default_niter] if row["speedup"] < GOALS["speedup"] else []
            more = [n for n in niter_sweep if n > default_niter] if row["inertia_ratio"] > GOALS["inertia_ratio"] else []
            if not row["met"]:
                for niter in fewer + more:
                    r = run_kmeans(x, k, "faiss", seed, niter=niter, **(faiss_opts or {}))
                    row["sweep"].append({"niter": niter, "faiss_s": r["seconds"], "faiss_inertia": r["inertia"],
                                         "foreign_cpu": r["foreign_cpu"],
                                         **_kmeans_goal(r["seconds"], sk["seconds"], r["inertia"], sk["inertia"])})
            rows.append(row)
    return rows, codebooks


def _kmeans_goal(faiss_s: float, sk_s: float, faiss_in: float, sk_in: float) -> Dict[str, Any]:
    speedup, ratio = sk_s / max(faiss_s, 1e-9), faiss_in / sk_in
    return {"speedup": speedup, "inertia_ratio": ratio,
            "met": speedup >= GOALS["speedup"] and ratio <= GOALS["inertia_ratio"]}


# ----------------------------------------------------------------------------- heads
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_per_utt(head: Callable, utts: Utts, device: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds for one pass over the utterances, one head call each (as dump-tokens)."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _, mat in utts:
            head(torch.from_numpy(mat).to(device))
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def time_chunk(head: Callable, chunk: torch.Tensor, repeats: int) -> float:
    """Best-of-``repeats`` seconds for one head call on a large batched chunk."""
    best = float("inf")
    for _ in range(repeats):
        _sync(str(chunk.device))
        t0 = time.perf_counter()
        head(chunk)
        _sync(str(chunk.device))
        best = min(best, time.perf_counter() - t0)
    return best


def time_head(head: Callable, utts: Utts, chunk: torch.Tensor, device: str, repeats: int) -> Dict[str, float]:
    """Per-utterance and batched-chunk throughput of one head, and its output bytes per frame."""
    head(chunk[:256])  # warm-up (codebook tensors on the device, allocator)
    n_frames = sum(len(m) for _, m in utts)
    t_utt = time_per_utt(head, utts, device, repeats)
    t_chunk = time_chunk(head, chunk, repeats)
    tokens: TokenInput = head(chunk)
    return {"per_utt_s": t_utt, "per_utt_fps": n_frames / t_utt, "chunk_s": t_chunk,
            "chunk_fps": len(chunk) / t_chunk, "bytes_per_frame": tokens.nbytes() / len(chunk)}


def median_nearest_d2(cb: Codebook, x: torch.Tensor, batch: int = 32768) -> float:
    """Median squared distance of frames to their nearest centroid (the τ scale)."""
    mins = [cb.distances(x[i:i + batch]).min(dim=1).values for i in range(0, len(x), batch)]
    return float(torch.cat(mins).median())


def topk_mass(cb: Codebook, x: torch.Tensor, tau: float, ks: Sequence[int], batch: int = 32768) -> Dict[int, float]:
    """Mean over frames of the sum of the k largest dense soft probabilities, per k."""
    head, sums = build_head("soft", cb, tau=tau), {k: 0.0 for k in ks}
    for i in range(0, len(x), batch):
        top = torch.topk(head(x[i:i + batch]).probs[:, 0], max(ks), dim=1, sorted=True).values.double()
        csum = top.cumsum(dim=1)
        for k in ks:
            sums[k] += float(csum[:, k - 1].sum())
    return {k: s / len(x) for k, s in sums.items()}


def head_section(utts: Utts, codebooks: Dict[int, Codebook], device: str, top_ks: Sequence[int],
                 time_factor: float, chunk_frames: int, repeats: int) -> Dict[str, Any]:
    """Throughput, memory and top-k mass of the heads for each codebook, on ``device``."""
    x_all = torch.from_numpy(np.concatenate([m for _, m in utts])).to(device)
    chunk = x_all[:chunk_frames].contiguous()
    n_frames = int(len(x_all))
    out: Dict[str, Any] = {"device": device, "utts": len(utts), "frames": n_frames,
                           "chunk_frames": int(len(chunk)), "threads": torch.get_num_threads(), "K": {}}
    for k, cb in codebooks.items():
        med = median_nearest_d2(cb, x_all)
        tau = time_factor * med
        heads = {"hard": build_head("hard", cb), "soft_dense": build_head("soft", cb, tau=tau),
                 **{f"soft_top{t}": build_head("soft", cb, tau=tau, top_k=t) for t in top_ks}}
        res: Dict[str, Any] = {"median_d2": med, "tau_timed": tau, "heads": {}, "mass": {}}
        with CpuMeter() as meter:
            for name, head in heads.items():
                res["heads"][name] = h = time_head(head, utts, chunk, device, repeats)
                logger.info("%s K=%d %-12s per-utt %10.0f frames/s, chunk %10.0f frames/s, %6.0f B/frame",
                            device, k, name, h["per_utt_fps"], h["chunk_fps"], h["bytes_per_frame"])
        res["foreign_cpu"] = meter.foreign
        for f in TAU_FACTORS:
            res["mass"][str(f)] = {str(t): v for t, v in topk_mass(cb, x_all, f * med, top_ks).items()}
        out["K"][str(k)] = res
    return out


def head_goals(heads: Dict[str, Any], top_ks: Sequence[int]) -> Dict[str, Any]:
    """Per K: soft/hard time ratios and, per top-k, memory ratio and the τ factors reaching the mass goal."""
    goals: Dict[str, Any] = {}
    for k, res in heads["K"].items():
        h = res["heads"]
        soft = {}
        for name in ["soft_dense"] + [f"soft_top{t}" for t in top_ks]:
            ratios = {m: h[name][f"{m}_s"] / h["hard"][f"{m}_s"] for m in ("per_utt", "chunk")}
            soft[name] = {**ratios, "met": max(ratios.values()) <= GOALS["soft_vs_hard"]}
        topk = {}
        for t in top_ks:
            mem = h[f"soft_top{t}"]["bytes_per_frame"] / h["soft_dense"]["bytes_per_frame"]
            ok_f = [f for f, m in res["mass"].items() if m[str(t)] >= GOALS["mass"]]
            topk[str(t)] = {"mem_ratio": mem, "factors_with_mass": ok_f,
                            "met_factors": ok_f if mem <= GOALS["mem_ratio"] else []}
        goals[k] = {"soft_vs_hard": soft, "topk": topk}
    return goals


# ----------------------------------------------------------------------------- report
def machine_info() -> Dict[str, Any]:
    """CPU, thread count and library versions."""
    import faiss
    import sklearn

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "torch": torch.__version__, "faiss": faiss.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "faiss_gpus": faiss_gpus()}


def _verdict(ok: bool) -> str:
    return "**MET**" if ok else "**NOT MET**"


def _head_tables(heads: Dict[str, Any], goals: Dict[str, Any], top_ks: Sequence[int]) -> List[str]:
    """Markdown tables of one head section (throughput, mass, goals)."""
    dev = heads["device"]
    lines = [f"Device {dev}, {heads['threads']} torch threads; {heads['utts']} utts / {heads['frames']} frames "
             f"(per-utt pass as dump-tokens does), batched chunk of {heads['chunk_frames']} frames; best of repeats. "
             "Other processes' CPU share while timing: " +
             ", ".join(f"K={k}: {res['foreign_cpu']:.0%}" for k, res in heads["K"].items()) + ".",
             "", "| K | head | per-utt frames/s | chunk frames/s | × hard time (utt / chunk) | bytes/frame |",
             "|---|---|---|---|---|---|"]
    for k, res in heads["K"].items():
        for name, h in res["heads"].items():
            ratio = "" if name == "hard" else (f"{goals[k]['soft_vs_hard'][name]['per_utt']:.2f} / "
                                               f"{goals[k]['soft_vs_hard'][name]['chunk']:.2f}")
            lines.append(f"| {k} | {name} | {h['per_utt_fps']:,.0f} | {h['chunk_fps']:,.0f} | {ratio} | "
                         f"{h['bytes_per_frame']:.0f} |")
    lines += ["", "Mean probability mass kept by top-k (sum of the k largest dense probabilities), "
              "τ = f × median nearest-centroid d²:", "",
              "| K | median d² | k | " + " | ".join(f"f={f:g}" for f in TAU_FACTORS) + " |",
              "|---|---|---|" + "---|" * len(TAU_FACTORS)]
    for k, res in heads["K"].items():
        for t in top_ks:
            lines.append(f"| {k} | {res['median_d2']:.4g} | {t} | " +
                         " | ".join(f"{res['mass'][str(f)][str(t)]:.5f}" for f in TAU_FACTORS) + " |")
    lines += ["", f"Goals ({dev}):", ""]
    for k, g in goals.items():
        for name, s in g["soft_vs_hard"].items():
            lines.append(f"- K={k} {name} ≤ {GOALS['soft_vs_hard']}× hard time: {_verdict(s['met'])} "
                         f"({s['per_utt']:.2f}× per utt, {s['chunk']:.2f}× batched)")
        for t, s in g["topk"].items():
            where = f" at f ∈ {{{', '.join(s['met_factors'])}}}" if s["met_factors"] else ""
            mass_f = ", ".join(s["factors_with_mass"]) or "none"
            lines.append(f"- K={k} top-{t} ≤ {GOALS['mem_ratio']:.0%} of dense memory with ≥ {GOALS['mass']} mass: "
                         f"{_verdict(bool(s['met_factors']))}{where} (memory {s['mem_ratio']:.1%} of dense; "
                         f"mass ≥ {GOALS['mass']} at f ∈ {{{mass_f}}})")
    return lines


def render_markdown(r: Dict[str, Any]) -> str:
    """RESULTS.md text from the results dict."""
    m, top_ks = r["machine"], r["args"]["top_k"]
    lines = ["# Tokenizer benchmark", "", f"Command: `{r['command']}`", "",
             f"Date: {r['date']} — wall time {r['wall_seconds'] / 60:.1f} min", "",
             f"Machine: {m['cpu_count']} CPUs ({m['cpu']}), Python {m['python']}, torch {m['torch']}, "
             f"faiss {m['faiss']}, sklearn {m['sklearn']}, numpy {m['numpy']}; GPU: {m['cuda'] or 'none'} "
             f"(`--device {r['args'].get('device', 'auto')}`, faiss k-means on {r['kmeans_gpus'] or 'no'} GPUs); "
             f"{r['args']['threads']} threads for torch, faiss and sklearn.", "",
             "\"other load\" = share of all CPUs used by other processes while a step was timed "
             "(from /proc/stat minus this process's CPU time); timings with a high share are slowed by "
             "contention and less trustworthy.", "",
             f"Data: speechocean762 train, {r['args']['max_utts']} utts (evenly spaced); features:", ""]
    for feat, f in r["features"].items():
        lines.append(f"- {feat}: {f['utts']} utts, {f['frames']} frames × {f['dim']} dims"
                     + (f" (extracted in {f['prep']['seconds']} s)" if not f["prep"].get("cached") else " (cached)"))
    lines += ["", "## k-means: faiss vs sklearn MiniBatchKMeans", "",
              f"faiss: `learn_kmeans(backend='faiss')` defaults (niter={r['faiss_default_niter']}); sklearn: "
              "defaults (k-means++, batch 10000, n_init 20, max_iter 100). Time = training only; inertia of both "
              "on all training frames.", "",
              "| feature | K | frames | faiss s | sklearn s | speedup | faiss inertia | sklearn inertia | ratio | "
              "goal | other load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["kmeans"]:
        lines.append(f"| {row['feature']} | {row['K']} | {row['frames']} | {row['faiss_s']:.1f} | "
                     f"{row['sklearn_s']:.1f} | {row['speedup']:.2f}× | {row['faiss_inertia']:.6g} | "
                     f"{row['sklearn_inertia']:.6g} | {row['inertia_ratio']:.4f} | {_verdict(row['met'])} | "
                     f"{row['foreign_cpu']:.0%} |")
    sweeps = [row for row in r["kmeans"] if row["sweep"]]
    if sweeps:
        lines += ["", "faiss `niter` sweep where the default missed the goal:", "",
                  "| feature | K | niter | faiss s | speedup | inertia ratio | goal | other load |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in sweeps:
            for s in row["sweep"]:
                lines.append(f"| {row['feature']} | {row['K']} | {s['niter']} | {s['faiss_s']:.1f} | "
                             f"{s['speedup']:.2f}× | {s['inertia_ratio']:.4f} | {_verdict(s['met'])} | "
                             f"{s['foreign_cpu']:.0%} |")
    lines += ["", f"Goal: faiss ≥ {GOALS['speedup']:g}× faster with inertia ≤ {GOALS['inertia_ratio']} × sklearn's "
              "(default settings): " + _verdict(all(row["met"] for row in r["kmeans"])) + " — " +
              "; ".join(f"{row['feature']} K={row['K']}: {row['speedup']:.2f}×, ratio {row['inertia_ratio']:.4f}"
                        for row in r["kmeans"]), "",
              f"## Heads on whisper features (faiss codebooks; timed at τ = {r['args']['time_factor']:g} × median d²)",
              ""]
    lines += _head_tables(r["heads_cpu"], r["goals_cpu"], top_ks)
    lines += ["", "## GPU", ""]
    if r["heads_gpu"] is None:
        lines.append("not timed on a GPU (`--device cpu`, or torch.cuda.is_available() is False)")
    else:
        lines += _head_tables(r["heads_gpu"], r["goals_gpu"], top_ks)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-utts", type=int, default=DEFAULT_MAX_UTTS,
                   help="train utts to use, evenly spaced over the 2,500 (default %(default)s: run in ~20-30 min)")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--work", type=Path, default=BENCH / "work")
    p.add_argument("--out-dir", type=Path, default=BENCH, help="where RESULTS.md and results.json go")
    p.add_argument("--features", nargs="+", default=["whisper", "mfcc"])
    p.add_argument("--k", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--top-k", type=int, nargs="+", default=[8, 32])
    p.add_argument("--niter-sweep", type=int, nargs="*", default=[5, 10, 20, 100],
                   help="faiss niter values tried where the default misses the k-means goal: those below the "
                        "default when faiss is too slow, those above when its inertia is too high")
    p.add_argument("--head-utts", type=int, default=300, help="utts for head timing and top-k mass")
    p.add_argument("--chunk-frames", type=int, default=32768, help="frames of the batched-chunk timing")
    p.add_argument("--time-factor", type=float, default=0.1, help="τ factor used for timing the soft heads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for torch, faiss and sklearn alike (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="cuda: faiss k-means on all visible GPUs (needs faiss-gpu), features and heads on CUDA too "
                        "(heads also on the CPU); cpu: no GPU at all; auto: whatever is visible")
    return p.parse_args(argv)


def check_device(device: str) -> Tuple[Optional[bool], int]:
    """faiss ``gpu`` option for ``--device`` and the GPUs faiss k-means will use; a missing GPU is a ValueError."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA GPU")
    gpu = {"auto": None, "cpu": False, "cuda": True}[device]
    return gpu, faiss_gpus(gpu)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and write RESULTS.md + results.json; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t_start = time.perf_counter()
    set_threads(args.threads)
    try:
        faiss_gpu, kmeans_gpus = check_device(args.device)
    except ValueError as exc:
        logger.error("%s", exc)
        return 1
    command = shlex.join(["python", "bench/tokenizer.py", *(sys.argv[1:] if argv is None else argv)])

    data_dir = make_data_dir(args.corpus, "train", args.max_utts, args.work / "data" / f"train_{args.max_utts}")
    features, utts_by_feat = {}, {}
    for feat in args.features:
        out = args.work / "feats" / f"{feat}_train_{args.max_utts}"
        prep = prepare_features(data_dir, feat, out, nj=1 if feat == "whisper" else os.cpu_count() or 1,
                                device=args.device if feat == "whisper" and args.device != "auto" else None)
        utts_by_feat[feat] = load_utts(out / "feats.scp")
        n = sum(len(m) for _, m in utts_by_feat[feat])
        features[feat] = {"utts": len(utts_by_feat[feat]), "frames": n,
                          "dim": int(utts_by_feat[feat][0][1].shape[1]), "prep": prep}
        logger.info("%s: %d utts, %d frames", feat, len(utts_by_feat[feat]), n)

    frames = {f: np.concatenate([m for _, m in u]) for f, u in utts_by_feat.items()}
    kmeans_rows, codebooks = kmeans_section(frames, args.k, args.seed, args.niter_sweep,
                                            None if faiss_gpu is None else {"gpu": faiss_gpu})
    del frames

    head_utts = utts_by_feat["whisper"][:: max(1, len(utts_by_feat["whisper"]) // args.head_utts)][:args.head_utts]
    whisper_cbs = {k: codebooks[("whisper", k)] for k in args.k}
    bench = dict(top_ks=args.top_k, time_factor=args.time_factor, chunk_frames=args.chunk_frames,
                 repeats=args.repeats)
    heads_cpu = head_section(head_utts, whisper_cbs, "cpu", **bench)
    gpu_heads = args.device != "cpu" and torch.cuda.is_available()
    heads_gpu = head_section(head_utts, whisper_cbs, "cuda", **bench) if gpu_heads else None

    results = {"command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": machine_info(), "args": {k: str(v) if isinstance(v, Path) else v
                                                   for k, v in vars(args).items()},
               "goals": GOALS, "faiss_default_niter": inspect.signature(learn_faiss).parameters["niter"].default,
               "features": features, "kmeans": kmeans_rows, "kmeans_gpus": kmeans_gpus,
               "heads_cpu": heads_cpu, "goals_cpu": head_goals(heads_cpu, args.top_k),
               "heads_gpu": heads_gpu, "goals_gpu": head_goals(heads_gpu, args.top_k) if heads_gpu else None}
    results["wall_seconds"] = time.perf_counter() - t_start
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out_dir / "results.json", json.dumps(jsonable(results), indent=1) + "\n")
    atomic_write_text(args.out_dir / "RESULTS.md", render_markdown(results))
    logger.info("wrote %s and %s in %.1f min", args.out_dir / "RESULTS.md", args.out_dir / "results.json",
                results["wall_seconds"] / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
