"""GPU.md from gpu.json: bench/gpu_check.py's report, including its state before any GPU run (:func:`not_run`)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

NOT_RUN = ("No GPU run has happened yet: no device machine has been lent to a task since the check was written "
           "(issue 18), so no figure here comes from a GPU. Its dry run (the same steps at tiny sizes on the CPU) "
           "runs in CI (tests/test_gpu_check.py). The first task lent a GPU runs the check once, early, and commits "
           "the GPU.md and gpu.json it renders in place of these.")
HOW_TO = [
    "## How to run", "",
    "1. Here, where the package index is reachable: `bash tools/gpu_wheels.sh` downloads the wheels of "
    "`tools/gpu_wheels.txt` (what the check imports that the device image lacks) into `.whl/`, ignored by git, and "
    "checks that they and the working tree fit the 64 MiB a device call carries.",
    "2. On the device machine, from the repository root, carrying `.whl`: `bash tools/gpu_check.sh --out-dir "
    "\"$OUT\"`. It installs the wheels offline into /tmp with pip (the report says which and how long it took), "
    "then runs the steps within 9 minutes (give the call a 10-minute limit).",
    "3. Copy `GPU.md` and `gpu.json` from what comes back into `bench/` and commit them; `gpu_check.log` has every "
    "step's output.", "",
    "`bash tools/gpu_check.sh --dry-run --out-dir DIR` runs every step at tiny sizes on the CPU in about a minute."]
FAISS_GPU = ("faiss-gpu is not measured: no faiss GPU build can travel to the device machine. `bash tools/gpu_wheels.sh "
             "--probe faiss-gpu==1.15.1 faiss-gpu-cu12==1.14.1.post1 'nvidia-cublas-cu12<13' "
             "'nvidia-cuda-runtime-cu12<13'` measured faiss-gpu 1.15.1 at 129.0 MiB, over the 64 MiB a call carries, "
             "and faiss-gpu-cu12 1.14.1.post1 at 46.2 MiB, but the shared objects of both name libcudart.so.12 and "
             "libcublas.so.12, the CUDA 12 runtime, whose wheels add 554.3 MiB (nvidia-cublas-cu12 12.9.3.13) and "
             "3.3 MiB (nvidia-cuda-runtime-cu12 12.9.79), while the device machine's torch is built for CUDA 13. The GPU k-means "
             "measured instead is softtok's torch backend (`softtok learn-kmeans --backend torch`).")


def num(value: Optional[float], fmt: str = ".3g") -> str:
    """``value`` formatted, or an en dash for a missing figure."""
    return "–" if value is None else format(value, fmt)


def result_of(results: Dict[str, Any], step: str) -> Optional[Dict[str, Any]]:
    """What a step measured (possibly partial), or None when it wrote nothing."""
    return results.get("steps", {}).get(step, {}).get("result")


def not_run() -> Dict[str, Any]:
    """gpu.json's state before the first GPU run."""
    return {"state": "not run", "note": NOT_RUN}


def header(results: Dict[str, Any]) -> List[str]:
    """Command, date, wall time, device and versions (from the env step)."""
    lines = ["# GPU check", ""]
    if results["state"] == "dry run":
        lines += ["**Dry run** (`--dry-run`): every step ran at tiny sizes on the CPU. No figure below is a GPU "
                  "measurement; the file shows what a GPU run reports.", ""]
    lines += [f"Command: `{results['command']}`", "",
              f"Date: {results['date']}; wall time {results['wall_s'] / 60:.1f} min, installing included, of a "
              f"{results['total_s'] / 60:.1f}-min budget.", ""]
    env = result_of(results, "env")
    if env is None:
        return lines + ["Device: unknown (the env step wrote nothing).", ""]
    gpu = (f"{env['gpu']} ({env['gpu_memory_gib']:.1f} GiB, compute capability {env['capability']})"
           if env["gpu"] else "no CUDA GPU visible")
    v = {name: version or "not installed" for name, version in env["versions"].items()}
    lines += [f"Device: {gpu}; {env['cpu_count']} CPUs. Python {env['python']}, torch {env['torch']} (CUDA "
              f"{env['torch_cuda']}, cuDNN {env['cudnn']}, NCCL {env['nccl']}), numpy {v['numpy']}, faiss {v['faiss']} "
              f"({env['faiss_gpus']} GPUs visible to faiss), espnet {v['espnet']}, torchaudio {v['torchaudio']}.", ""]
    smi = env["nvidia_smi"].strip()
    return lines + (["```", *smi.splitlines()[:14], "```", ""] if smi else [])


def install_lines(install: Dict[str, Any]) -> List[str]:
    if "wheels" not in install:
        return ["## Install", "", f"{install['status']}.", ""]
    return ["## Install", "",
            f"{len(install['wheels'])} wheels ({install['mib']:.1f} MiB) from `{install['from']}`, `pip install "
            f"--no-index --no-deps --target` in {num(install['seconds'], '.1f')} s: {install['status']}. "
            + ", ".join(install["wheels"]) + ".", ""]


def step_lines(steps: Dict[str, Any]) -> List[str]:
    """The steps' status table and, for each that did not finish, the end of its output."""
    lines = ["## Steps", "", "| step | status | seconds | limit s |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s['seconds']:.1f} | {num(s.get('limit_s'), '.0f')} |"
              for name, s in steps.items()]
    for name, s in steps.items():
        if s.get("tail"):
            lines += ["", f"End of the output of {name}:", "", "```", *s["tail"].strip().splitlines()[-40:], "```"]
    return lines + [""]


def kmeans_lines(km: Dict[str, Any], env: Optional[Dict[str, Any]]) -> List[str]:
    lines = ["## k-means (`learn_kmeans`)", "",
             f"{km['frames']:,} synthetic frames × {km['dim']} (a mixture of {km['modes']} modes in a 64-dim "
             f"subspace plus noise), {km['niter']} Lloyd passes from k-means++ seeds; faiss on the CPU trains on "
             "fewer frames (it is the slow one). Train seconds as `learn_kmeans` measures them (seeding included; "
             "torch: the copy to the device too); inertia per frame on the frames each one trained on; "
             "distances/s = frames × K × passes / train seconds; peak: CUDA memory (torch only).", "",
             "| backend | where | K | frames | train s | 10⁹ distances/s | inertia / frame | peak MiB | other CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in km["rows"]:
        rate = r["frames"] * r["K"] * km["niter"] / max(r["seconds"], 1e-9) / 1e9
        lines.append(f"| {r['backend']} | {r['where']} | {r['K']} | {r['frames']:,} | {r['seconds']:.2f} | "
                     f"{rate:.3g} | {r['inertia_per_frame']:.4g} | {num(r['peak_mib'], '.0f')} | "
                     f"{r['other_cpu']:.0%} |")
    if not any(r["backend"] == "faiss" and "GPU" in r["where"] for r in km["rows"]):
        loads = ("" if env is None else f" On this machine libcudart.so.12 loads: "
                 f"{'yes' if env['cuda12_runtime_loads'] else 'no'}; libcublas.so.12: "
                 f"{'yes' if env['cublas12_loads'] else 'no'}.")
        lines += ["", FAISS_GPU + loads]
    return lines + [""]


def heads_lines(h: Dict[str, Any], top_ks: List[int]) -> List[str]:
    """bench/tokenizer.py's head tables, then the peak memory per head and the embedding paths."""
    from tokenizer import _head_tables

    lines = ["## Heads (bench/tokenizer.py's head timing)", "",
             f"Synthetic frames of {h['dim']} dims; codebooks of K random frames; τ = {h['time_factor']} × median "
             "nearest squared distance.", ""]
    lines += _head_tables(h["heads"], h["goals"], top_ks)
    lines += ["", "Peak CUDA memory of one batched head call (its output included) and the token embedding "
              f"(d = {h['table_dim']}) of the batched chunk four ways: head then table, or the fused attention call "
              "(`TokenEmbedding.soft_from_features`):", "",
              "| K | path | head peak MiB | embedding frames/s | × hard time | embedding peak MiB |",
              "|---|---|---|---|---|---|"]
    for k, rows in h.get("embedding", {}).items():
        heads = h["heads"]["K"][k]["heads"]
        for name, r in rows.items():
            ratio = rows["hard"]["chunk_s"] and r["chunk_s"] / rows["hard"]["chunk_s"]
            lines.append(f"| {k} | {name} | {num(heads.get(name, {}).get('peak_mib'), '.1f')} | "
                         f"{r['chunk_fps']:,.0f} | {num(ratio, '.2f')} | {num(r['peak_mib'], '.1f')} |")
        lines.append(f"| {k} | fused − soft_dense | max abs difference {rows['fused']['max_abs_diff_vs_soft_dense']:.1e} "
                     "| | | |")
    return lines + [""]


def training_row(t: Dict[str, Any]) -> str:
    """steps (timed) | s / step | steps / s | peak MiB | wall s."""
    return (f"{t['steps']} ({t['timed']}) | {num(t.get('median_s'))} | {num(t.get('steps_per_s'))} | "
            f"{num(t['peak_mib'], '.0f')} | {t['train_seconds']:.1f}")


def asr_lines(asr: Dict[str, Any], sizes: Dict[str, Any]) -> List[str]:
    t = asr["train"]
    lines = ["## ASR trainer (speechocean762 recipe)", "",
             f"`{t['config']}`, one epoch (overrides: {', '.join(t['overrides'])}) on synthetic features: "
             f"{sizes['train_utts']} utterances, {t['train_frames']:,} frames of {sizes['asr_dim']} dims (whisper "
             f"tiny.en's), a K = {sizes['asr_k']} codebook, the hard head. Step time: between the ends of "
             f"consecutive optimizer steps (data, forward, backward, step); the first {sizes['warmup_steps']} "
             "intervals are warm-up, left out.", "",
             "| params (M) | batch_frames | frames / step | steps (timed) | s / step | steps / s | peak MiB | wall s |",
             "|---|---|---|---|---|---|---|---|",
             f"| {t['params_m']:.2f} | {t['batch_frames']} | {t['frames_per_step']:,.0f} | {training_row(t)} |"]
    if "sweep" in asr:
        sw = asr["sweep"]
        lines += ["", f"Dev τ sweep (`softtok.recipes.asr.sweep_tau`, greedy CTC) on the device: {sw['utts']} "
                  f"utterances, {sw['frames']:,} frames, {sw['seconds']:.1f} s in all. WER and CER mean nothing "
                  "here (one epoch on synthetic letters): the sweep is timed.", "",
                  "| τ / median d² | τ | dev WER | dev CER | decode s | frames/s |", "|---|---|---|---|---|---|"]
        for r in [{"factor": "hard", "tau": None, **sw["hard"]}, *sw["rows"]]:
            lines.append(f"| {r['factor']} | {num(r['tau'], '.4g')} | {r['wer']:.2f} | {r['cer']:.2f} | "
                         f"{r['seconds']:.2f} | {sw['frames'] / max(r['seconds'], 1e-9):,.0f} |")
    return lines + [""]


def hifigan_lines(voc: Dict[str, Any], sizes: Dict[str, Any]) -> List[str]:
    t = voc["train"]
    return ["## HiFi-GAN unit vocoder", "",
            f"`{t['config']}`, one epoch (overrides: {', '.join(t['overrides'])}) on {sizes['voc_utts']} synthetic "
            f"{sizes['voc_seconds']:g}-s utterances (16 kHz tones, features of {sizes['asr_dim']} dims), the hard "
            f"head. A step: the discriminator's, then the generator's; the first {sizes['warmup_steps']} intervals "
            "between steps are warm-up, left out.",
            "", "| generator (M) | discriminator (M) | batch | crop frames | steps (timed) | s / step | steps / s | "
            "peak MiB | wall s |", "|---|---|---|---|---|---|---|---|---|",
            f"| {t['generator_m']:.2f} | {t['discriminator_m']:.2f} | {t['batch_size']} | {t['segment_frames']} | "
            f"{training_row(t)} |", ""]


def ddp_lines(ddp: Dict[str, Any], results: Dict[str, Any]) -> List[str]:
    lines = ["## DDP under torchrun (one process)", "",
             f"`torchrun --standalone --nproc_per_node 1`; a one-rank `{ddp['backend']}` process group (world size "
             f"{ddp['world_size']}) made first, then each trainer as above, which wraps its models in it "
             "(`softtok.downstream.distributed.wrap`).", "",
             "| trainer | wrapped as | steps (timed) | s / step | steps / s | peak MiB | wall s | × single-process s / step |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("asr", "hifigan"):
        if name in ddp:
            alone = (result_of(results, name) or {}).get("train", {}).get("median_s")
            ratio = alone and ddp[name].get("median_s") and ddp[name]["median_s"] / alone
            lines.append(f"| {name} | {', '.join(ddp[name]['wrapped_as'])} | {training_row(ddp[name])} | "
                         f"{num(ratio, '.2f')} |")
    return lines + [""]


def render_markdown(results: Dict[str, Any]) -> str:
    """GPU.md from gpu.json."""
    if results["state"] == "not run":
        return "\n".join(["# GPU check", "", results["note"], "", *HOW_TO, "", "## faiss-gpu", "", FAISS_GPU]) + "\n"
    lines = header(results) + install_lines(results["install"]) + step_lines(results["steps"])
    sizes, env = results["sizes"], result_of(results, "env")
    sections = [("heads", lambda r: heads_lines(r, sizes["top_ks"])), ("asr", lambda r: asr_lines(r, sizes)),
                ("hifigan", lambda r: hifigan_lines(r, sizes)), ("ddp", lambda r: ddp_lines(r, results)),
                ("kmeans", lambda r: kmeans_lines(r, env))]
    for step, render in sections:
        part = result_of(results, step)
        if part:
            lines += render(part)
    return "\n".join(lines + HOW_TO) + "\n"
