"""The steps of bench/gpu_check.py, one per process: ``python bench/gpu_steps.py STEP --work W --result R``.

Each step measures one GPU path through the code the recipes run (imported, never copied), on synthetic but
structured data made here (the device machine has no corpus), and rewrites its JSON result after every
measurement, so a step stopped at its time limit keeps what it had. ``--dry-run``: tiny sizes on the CPU, the
same calls (tests/test_gpu_check.py). Steps:

- env: nvidia-smi, Python / torch / CUDA / cuDNN / NCCL / faiss / espnet versions, whether CUDA 12 libraries load.
- heads: bench/tokenizer.py's head timing (hard, soft dense, soft top-k: per utterance and batched, bytes per frame,
  top-k mass) on the device, the peak CUDA memory of each head, and the token embedding four ways (hard, soft
  dense and top-k two-step, the fused attention call of softtok.downstream.fused).
- asr: the speechocean762 recipe's trainer with egs/speechocean762/asr/conf/train_gpu.yaml for one epoch (seconds
  per step, peak CUDA memory), then its dev τ sweep (softtok.recipes.asr.sweep_tau) on the device.
- hifigan: the unit HiFi-GAN trainer with egs/piper_joe/voc/conf/hifigan_gpu.yaml for one epoch (steps per second).
- ddp: under ``torchrun --nproc_per_node 1``, a one-rank process group (nccl on CUDA, gloo on the CPU) made here,
  then both trainers, which wrap their models in DDP inside it (softtok.downstream.distributed).
- kmeans: learn_kmeans with the torch backend on the device, faiss on the GPU when this faiss has a GPU build, and
  faiss on the CPU (on fewer frames: it is the slow one), at each K.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # bench/ is no package: tokenizer.py and fused_embedding.py are imported from it
ASR_CONF = ROOT / "egs" / "speechocean762" / "asr" / "conf"
VOC_CONF = ROOT / "egs" / "piper_joe" / "voc" / "conf"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
logger = logging.getLogger("bench.gpu_steps")


@dataclass(frozen=True)
class Sizes:
    """How much each step measures: FULL on the GPU, DRY (tiny) on the CPU."""

    frames: int  # k-means frames (dim ``dim``: an SSL-large layer)
    dim: int
    modes: int  # mixture components of the synthetic frames
    ks: Tuple[int, ...]
    faiss_cpu_frames: int  # faiss on the CPU trains on the first this many frames
    niter: int
    head_utts: int
    utt_frames: int
    chunk_frames: int
    top_ks: Tuple[int, ...]
    repeats: int
    table_dim: int
    asr_dim: int  # whisper tiny.en, the speechocean762 recipe's features
    asr_k: int
    train_utts: int
    dev_utts: int
    utt_range: Tuple[int, int]  # frames per ASR utterance (50 per second)
    voc_utts: int
    voc_seconds: float
    warmup_steps: int  # training steps left out of the step timing


FULL = Sizes(frames=1 << 20, dim=1024, modes=2000, ks=(1024, 4096), faiss_cpu_frames=1 << 18, niter=10,
             head_utts=128, utt_frames=512, chunk_frames=65536, top_ks=(8, 32), repeats=3, table_dim=256,
             asr_dim=384, asr_k=1024, train_utts=1600, dev_utts=200, utt_range=(300, 500), voc_utts=40,
             voc_seconds=3.0, warmup_steps=3)
DRY = Sizes(frames=3000, dim=16, modes=24, ks=(16, 32), faiss_cpu_frames=2000, niter=3, head_utts=6, utt_frames=50,
            chunk_frames=300, top_ks=(4,), repeats=1, table_dim=8, asr_dim=12, asr_k=16, train_utts=24, dev_utts=6,
            utt_range=(30, 60), voc_utts=4, voc_seconds=1.0, warmup_steps=1)


# ----------------------------------------------------------------------------- plumbing
def save(path: Path, result: Dict[str, Any]) -> None:
    """The step's result so far, written atomically (a step killed later keeps it)."""
    from softtok.common import jsonable
    from softtok.tokenizers.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(jsonable(result), indent=1) + "\n")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextmanager
def spy(owner: Any, name: str, record: Callable[[Any], Any]) -> Iterator[List[Any]]:
    """``record(result)`` of every call of ``owner.name`` while the block runs; the function itself is unchanged."""
    original, seen = getattr(owner, name), []

    def recorded(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        seen.append(record(result))
        return result

    setattr(owner, name, recorded)
    try:
        yield seen
    finally:
        setattr(owner, name, original)


def step_clock(owner: Any, name: str, device: str):
    """:func:`spy` recording the time (after a device sync) at which each call of ``owner.name`` returned."""
    return spy(owner, name, lambda _: (sync(device), time.perf_counter())[1])


def step_times(stamps: Sequence[float], warmup: int) -> Dict[str, Any]:
    """Seconds between consecutive training steps, the first ``warmup`` left out: median, mean, count."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    if not gaps:
        return {"steps": len(stamps), "timed": 0}
    return {"steps": len(stamps), "timed": len(gaps), "median_s": statistics.median(gaps),
            "mean_s": statistics.fmean(gaps), "steps_per_s": 1.0 / statistics.median(gaps)}


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str, base: int = 0) -> Optional[float]:
    """Peak CUDA memory allocated since :func:`reset_peak`, less ``base`` bytes, in MiB; None on the CPU."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def call_peak_mib(call: Callable[[], Any], device: str) -> Optional[float]:
    """MiB one call allocates at its peak above what was held before (its output included); None on the CPU."""
    if not device.startswith("cuda"):
        return None
    reset_peak(device)
    base = torch.cuda.memory_allocated()
    out = call()
    peak = peak_mib(device, base)
    del out
    return peak


def structured_frames(n: int, dim: int, modes: int, seed: int, device: str) -> torch.Tensor:
    """``n`` frames (n, dim) around ``modes`` centres that span a 64-dim subspace, plus isotropic noise: clustered
    and low-rank as SSL features are, so k-means and the heads see realistic distances."""
    gen = torch.Generator(device=device).manual_seed(seed)
    rank = min(64, dim)
    basis = torch.randn(rank, dim, generator=gen, device=device) / rank ** 0.5
    centres = torch.randn(modes, rank, generator=gen, device=device) @ basis
    ids = torch.randint(modes, (n,), generator=gen, device=device)
    return centres[ids] + 0.5 * torch.randn(n, dim, generator=gen, device=device)


def random_codebook(frames: torch.Tensor, k: int, seed: int):
    """K of the frames as centroids (head cost does not depend on how the centroids were learned)."""
    from softtok.tokenizers.kmeans import Codebook

    gen = torch.Generator().manual_seed(seed)
    return Codebook(frames[torch.randperm(len(frames), generator=gen)[:k].to(frames.device)].cpu().numpy())


# ----------------------------------------------------------------------------- env
def library_loads(name: str) -> bool:
    """Whether the dynamic loader finds ``name`` (e.g. libcudart.so.12, which faiss-gpu wheels link)."""
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def version_of(module: str, *dists: str) -> Optional[str]:
    """The installed version of ``module`` (the first of its distributions ``dists`` found), or None if missing."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if find_spec(module) is None:
        return None
    for dist in dists or (module,):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "?"


def step_env(sizes: Sizes, device: str, out: Path) -> Dict[str, Any]:
    """nvidia-smi and the versions every later step depends on."""
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        smi = f"nvidia-smi: {exc}"
    cuda = torch.cuda.is_available()
    result = {"nvidia_smi": smi, "python": platform.python_version(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": cuda,
              "cudnn": torch.backends.cudnn.version() if cuda else None,
              "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
              "gpu": torch.cuda.get_device_name(0) if cuda else None,
              "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2 ** 30 if cuda else None,
              "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
              "versions": {m: version_of(m, *d) for m, d in {
                  "numpy": (), "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12"), "espnet": (),
                  "sklearn": ("scikit-learn",), "torchaudio": (), "soundfile": (), "kaldiio": (), "jiwer": (),
                  "librosa": ()}.items()},
              "cuda12_runtime_loads": library_loads("libcudart.so.12"),
              "cublas12_loads": library_loads("libcublas.so.12")}
    from softtok.tokenizers.kmeans import faiss_gpus

    result["faiss_gpus"] = faiss_gpus() if result["versions"]["faiss"] else 0
    save(out, result)
    return result


# ----------------------------------------------------------------------------- heads
def embedding_rows(chunk: torch.Tensor, codebook: Any, tau: float, sizes: Sizes) -> Dict[str, Any]:
    """Token embedding of a chunk: hard, soft dense and top-k (head then table) against the fused attention call."""
    from softtok.downstream.embedding import TokenEmbedding
    from softtok.tokenizers.heads import build_head
    from tokenizer import time_chunk

    device = str(chunk.device)
    torch.manual_seed(0)
    emb = TokenEmbedding(codebook.n_clusters, sizes.table_dim).to(device).requires_grad_(False)
    heads = {"hard": build_head("hard", codebook), "soft_dense": build_head("soft", codebook, tau=tau),
             **{f"soft_top{t}": build_head("soft", codebook, tau=tau, top_k=t) for t in sizes.top_ks}}
    calls = {name: (lambda x, h=head: emb(h(x))) for name, head in heads.items()}
    calls["fused"] = lambda x: emb.soft_from_features(x, codebook, tau)
    rows = {}
    for name, call in calls.items():
        call(chunk[:256])  # warm-up
        seconds = time_chunk(call, chunk, sizes.repeats)
        rows[name] = {"chunk_s": seconds, "chunk_fps": len(chunk) / seconds,
                      "peak_mib": call_peak_mib(lambda c=call: c(chunk), device)}
    rows["fused"]["max_abs_diff_vs_soft_dense"] = float((calls["fused"](chunk) - calls["soft_dense"](chunk)).abs().max())
    return rows


def step_heads(sizes: Sizes, device: str, out: Path) -> Dict[str, Any]:
    """bench/tokenizer.py's head section on the device, plus peak memory and the embedding paths, per K."""
    from softtok.tokenizers.heads import build_head
    from tokenizer import head_goals, head_section

    frames = structured_frames(sizes.head_utts * sizes.utt_frames, sizes.dim, sizes.modes, 1, device)
    utts = [(f"u{i}", frames[i * sizes.utt_frames:(i + 1) * sizes.utt_frames].cpu().numpy())
            for i in range(sizes.head_utts)]
    codebooks = {k: random_codebook(frames, k, k) for k in sizes.ks}
    result: Dict[str, Any] = {"dim": sizes.dim, "table_dim": sizes.table_dim, "time_factor": 0.1}
    result["heads"] = head_section(utts, codebooks, device, sizes.top_ks, result["time_factor"], sizes.chunk_frames,
                                   sizes.repeats)
    result["goals"] = head_goals(result["heads"], sizes.top_ks)
    save(out, result)
    chunk = frames[:sizes.chunk_frames].contiguous()
    result["embedding"] = {}
    for k, cb in codebooks.items():
        tau = result["heads"]["K"][str(k)]["tau_timed"]
        for name, conf in {"hard": {}, "soft_dense": {"tau": tau},
                           **{f"soft_top{t}": {"tau": tau, "top_k": t} for t in sizes.top_ks}}.items():
            head = build_head("soft" if conf else "hard", cb, **conf)
            result["heads"]["K"][str(k)]["heads"][name]["peak_mib"] = call_peak_mib(lambda h=head: h(chunk), device)
        result["embedding"][str(k)] = embedding_rows(chunk, cb, tau, sizes)
        save(out, result)
    return result


# ----------------------------------------------------------------------------- data for the trainers
def write_features(dest: Path, n_utts: int, lengths: Tuple[int, int], centres: np.ndarray,
                   rng: np.random.Generator) -> Dict[str, List[int]]:
    """``n_utts`` utterances (keys u00000…) of character runs: each letter a centroid held 3-5 frames, plus noise;
    feats.scp/ark in ``dest``; returns each utterance's letter modes."""
    from softtok.tokenizers.fileio import ArkScpWriter

    letters = {}
    with ArkScpWriter(dest / "feats.ark", dest / "feats.scp") as writer:
        for i in range(n_utts):
            n_frames = int(rng.integers(*lengths))
            ids = rng.integers(0, len(LETTERS), size=max(1, n_frames // 4))
            frames = np.repeat(ids, -(-n_frames // len(ids)))[:n_frames]
            noise = 0.5 * rng.standard_normal((n_frames, centres.shape[1])).astype(np.float32)
            writer.write(f"u{i:05d}", centres[frames % len(centres)] + noise)
            letters[f"u{i:05d}"] = ids.tolist()
    return letters


def ensure_asr_data(work: Path, sizes: Sizes) -> Dict[str, str]:
    """Train and dev features, transcripts (the letters, a space every 5) and a codebook, made once per work dir."""
    from softtok.tokenizers.datadir import write_kaldi_map
    from softtok.tokenizers.kmeans import Codebook

    root = work / "asr_data"
    paths = {"kmeans": str(root / "kmeans.npy"), **{f"{s}_{kind}": str(root / s / name) for s in ("train", "dev")
                                                    for kind, name in (("feats", "feats.scp"), ("text", "text"))}}
    if (root / "done").is_file():
        return paths
    rng = np.random.default_rng(0)
    centres = structured_frames(sizes.asr_k, sizes.asr_dim, sizes.asr_k, 2, "cpu").numpy()
    Codebook(centres).save(root / "kmeans.npy")
    for name, n_utts in (("train", sizes.train_utts), ("dev", sizes.dev_utts)):
        letters = write_features(root / name, n_utts, sizes.utt_range, centres, rng)
        write_kaldi_map(root / name / "text", {u: " ".join("".join(LETTERS[i] for i in ids[j:j + 5])
                                                           for j in range(0, len(ids), 5))
                                               for u, ids in letters.items()})
    (root / "done").touch()
    return paths


def ensure_voc_data(work: Path, sizes: Sizes) -> Dict[str, str]:
    """16 kHz tones (one pitch per letter run) with their features (50 /s), a data dir and a codebook, made once."""
    from softtok.tokenizers.audio import write_audio
    from softtok.tokenizers.datadir import write_data_dir
    from softtok.tokenizers.kmeans import Codebook

    root = work / "voc_data"
    paths = {"kmeans": str(root / "kmeans.npy"), "feats": str(root / "feats.scp"), "data": str(root / "data")}
    if (root / "done").is_file():
        return paths
    rng = np.random.default_rng(1)
    centres = structured_frames(sizes.asr_k, sizes.asr_dim, sizes.asr_k, 3, "cpu").numpy()
    Codebook(centres).save(root / "kmeans.npy")
    n_frames = int(sizes.voc_seconds * 50)
    letters = write_features(root, sizes.voc_utts, (n_frames, n_frames + 1), centres, rng)
    wav = {}
    t = np.arange(320) / 16000
    for utt, ids in letters.items():
        frames = np.repeat(ids, -(-n_frames // len(ids)))[:n_frames]
        wave = np.concatenate([0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) for i in frames]).astype(np.float32)
        write_audio(root / "audio" / f"{utt}.wav", wave)
        wav[utt] = str(root / "audio" / f"{utt}.wav")
    write_data_dir(root / "data", wav)
    (root / "done").touch()
    return paths


def shrunk_asr_model(model: Dict[str, Any]) -> Dict[str, Any]:
    """train_gpu.yaml's model with every width and depth cut to a toy's: the same options, built by the same code."""
    return {**model, "embed_dim": 32,
            "encoder_conf": {**model["encoder_conf"], "output_size": 32, "attention_heads": 2, "linear_units": 64,
                             "cgmlp_linear_units": 64, "num_blocks": 1},
            "decoder_conf": {**model["decoder_conf"], "attention_heads": 2, "linear_units": 64, "num_blocks": 1}}


def asr_overrides(dry: bool) -> Dict[str, Any]:
    """One epoch of train_gpu.yaml (dry run: its model shrunk, small batches, one thread)."""
    from softtok.tokenizers.fileio import load_yaml

    base = {"max_epoch": 1, "keep_nbest": 1}
    if not dry:
        return base
    model = shrunk_asr_model(load_yaml(ASR_CONF / "train_gpu.yaml")["model"])
    return {**base, "model": model, "batch_frames": 400, "num_threads": 1}


def voc_overrides(dry: bool) -> Dict[str, Any]:
    """One epoch of hifigan_gpu.yaml (dry run: 32 generator channels, the smoke config's discriminator widths under
    the GPU config's scales and periods, short crops, small batches, one thread)."""
    from softtok.tokenizers.fileio import load_yaml

    base = {"max_epoch": 1, "max_valid_utts": 2}
    if not dry:
        return base
    gpu, smoke = load_yaml(VOC_CONF / "hifigan_gpu.yaml"), load_yaml(VOC_CONF / "hifigan_smoke.yaml")
    widths = {k: v for k, v in smoke["discriminator"].items() if k.endswith("_params")}
    return {**base, "model": {**gpu["model"], "channels": 32, "embed_dim": 16},
            "discriminator": {**gpu["discriminator"], **widths}, "batch_size": 2, "segment_frames": 8,
            "segments_per_utt": 2, "num_threads": 1, "max_valid_utts": 1}


# ----------------------------------------------------------------------------- trainers
def fresh(exp: Path) -> Path:
    """An empty experiment folder (a trainer would resume from an old one and train nothing)."""
    import shutil

    shutil.rmtree(exp, ignore_errors=True)
    return exp


def train_asr(work: Path, sizes: Sizes, device: str, exp: Path, dry: bool) -> Dict[str, Any]:
    """One epoch of the recipe's ASR trainer with train_gpu.yaml: seconds per step, frames per step, peak memory."""
    from softtok.downstream.asr import train as asr_train
    from softtok.tokenizers.fileio import load_yaml, read_matrix_shapes

    data = ensure_asr_data(work, sizes)
    reset_peak(device)
    t0 = time.perf_counter()
    with step_clock(asr_train, "optimizer_step", device) as stamps:
        summary = asr_train.train(str(ASR_CONF / "train_gpu.yaml"), data["train_feats"], data["train_text"],
                                  data["dev_feats"], data["dev_text"], str(fresh(exp)), head="hard",
                                  kmeans=data["kmeans"], overrides=asr_overrides(dry), device=device)
    seconds, peak = time.perf_counter() - t0, peak_mib(device)
    config = load_yaml(exp / "config.yaml")
    frames = sum(shape[0] for shape in read_matrix_shapes(data["train_feats"]).values())
    params = sum(p.numel() for p in asr_train.build_model(config).parameters())
    return {"config": "egs/speechocean762/asr/conf/train_gpu.yaml", "overrides": asr_overrides(dry),
            "batch_frames": config["batch_frames"], "train_frames": frames, "params_m": params / 1e6,
            "train_seconds": seconds, "peak_mib": peak, "best_valid_loss": summary["best_valid_loss"],
            "frames_per_step": frames / max(len(stamps), 1), **step_times(stamps, sizes.warmup_steps)}


def sweep_dev(exp: Path, data: Dict[str, str]) -> Dict[str, Any]:
    """The recipe's dev τ sweep (hard, then soft at each τ factor) on the device; seconds per decode."""
    from softtok.recipes.asr import decode_dir, sweep_tau
    from softtok.tokenizers.fileio import load_yaml, read_matrix_shapes
    from softtok.tokenizers.tau import load_sweep

    t0 = time.perf_counter()
    sweep_tau(str(exp), data["dev_feats"], data["dev_text"])
    sweep = load_sweep(exp)
    hard = load_yaml(exp / decode_dir("hard") / "dev" / "decode.yaml")
    return {"seconds": time.perf_counter() - t0, "hard": {**sweep["hard"], "seconds": hard["seconds"]},
            "rows": sweep["sweep"], "best": sweep["best"], "utts": hard["utts"],
            "frames": sum(shape[0] for shape in read_matrix_shapes(data["dev_feats"]).values())}


def train_voc(work: Path, sizes: Sizes, device: str, exp: Path, dry: bool) -> Dict[str, Any]:
    """One epoch of the HiFi-GAN unit-vocoder trainer with hifigan_gpu.yaml: steps per second, peak memory."""
    from softtok.downstream.vocoder import hifigan
    from softtok.tokenizers.fileio import load_yaml

    data = ensure_voc_data(work, sizes)
    reset_peak(device)
    t0 = time.perf_counter()
    with step_clock(hifigan, "_train_step", device) as stamps:
        hifigan.train(str(VOC_CONF / "hifigan_gpu.yaml"), data["feats"], data["data"], str(fresh(exp)), head="hard",
                      kmeans=data["kmeans"], overrides=voc_overrides(dry), device=device)
    seconds, peak = time.perf_counter() - t0, peak_mib(device)
    config = load_yaml(exp / "config.yaml")
    millions = {name: sum(p.numel() for p in build(config).parameters()) / 1e6
                for name, build in (("generator_m", hifigan.build_generator),
                                    ("discriminator_m", hifigan.build_discriminator))}
    return {"config": "egs/piper_joe/voc/conf/hifigan_gpu.yaml", "overrides": voc_overrides(dry),
            "batch_size": config["batch_size"], "segment_frames": config["segment_frames"], **millions,
            "train_seconds": seconds, "peak_mib": peak, **step_times(stamps, sizes.warmup_steps)}


def step_asr(sizes: Sizes, device: str, out: Path, work: Path, dry: bool) -> Dict[str, Any]:
    result = {"train": train_asr(work, sizes, device, work / "asr_exp", dry)}
    save(out, result)
    result["sweep"] = sweep_dev(work / "asr_exp", ensure_asr_data(work, sizes))
    save(out, result)
    return result


def step_hifigan(sizes: Sizes, device: str, out: Path, work: Path, dry: bool) -> Dict[str, Any]:
    result = {"train": train_voc(work, sizes, device, work / "voc_exp", dry)}
    save(out, result)
    return result


def step_ddp(sizes: Sizes, device: str, out: Path, work: Path, dry: bool) -> Dict[str, Any]:
    """Under torchrun: a one-rank group (nccl on CUDA), then both trainers inside it, recording what wrap() made."""
    import torch.distributed as dist

    from softtok.downstream import distributed

    if device.startswith("cuda"):
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=local)
    else:
        dist.init_process_group("gloo")
    result: Dict[str, Any] = {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                              "torchrun": "TORCHELASTIC_RUN_ID" in os.environ}
    try:
        for name, train in (("asr", train_asr), ("hifigan", train_voc)):
            with spy(distributed, "wrap", lambda net: type(net).__name__) as wrapped:
                result[name] = train(work, sizes, device, work / f"ddp_{name}_exp", dry)
            result[name]["wrapped_as"] = wrapped
            save(out, result)
    finally:
        dist.destroy_process_group()
    return result


# ----------------------------------------------------------------------------- k-means
def kmeans_runs(x: np.ndarray, sizes: Sizes, device: str) -> List[Tuple[str, str, Dict[str, Any], np.ndarray]]:
    """(backend, where, options, frames) to time: torch on the device, faiss on the GPU if it can, faiss on the CPU."""
    runs = [("torch", device, {"device": device}, x)]
    try:
        from softtok.tokenizers.kmeans import faiss_gpus

        gpus = faiss_gpus()
    except ImportError:
        return runs
    if gpus:
        runs.append(("faiss", f"{gpus} GPU(s)", {"gpu": True}, x))
    return runs + [("faiss", f"CPU, {os.cpu_count()} threads", {"gpu": False}, x[:sizes.faiss_cpu_frames])]


def step_kmeans(sizes: Sizes, device: str, out: Path, work: Path, dry: bool) -> Dict[str, Any]:
    """learn_kmeans (bench/tokenizer.py's run_kmeans) per backend and K, slowest last; train seconds, inertia."""
    from tokenizer import run_kmeans

    torch.set_num_threads(os.cpu_count() or 1)
    x = structured_frames(sizes.frames, sizes.dim, sizes.modes, 0, device).cpu().numpy()
    result: Dict[str, Any] = {"frames": len(x), "dim": sizes.dim, "modes": sizes.modes, "niter": sizes.niter,
                              "faiss": version_of("faiss", "faiss-cpu", "faiss-gpu"),
                              "rows": []}
    for backend, where, options, frames in kmeans_runs(x, sizes, device):
        for k in sizes.ks:
            reset_peak(device)
            run = run_kmeans(frames, k, backend, 0, niter=sizes.niter, **options)
            result["rows"].append({"backend": backend, "where": where, "K": k, "frames": len(frames),
                                   "seconds": run["seconds"], "inertia_per_frame": run["inertia"] / len(frames),
                                   "other_cpu": run["foreign_cpu"],
                                   "peak_mib": peak_mib(device) if backend == "torch" else None})
            save(out, result)
    return result


STEPS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "env": lambda sizes, device, out, work, dry: step_env(sizes, device, out),
    "heads": lambda sizes, device, out, work, dry: step_heads(sizes, device, out),
    "asr": step_asr, "hifigan": step_hifigan, "ddp": step_ddp, "kmeans": step_kmeans}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=list(STEPS))
    p.add_argument("--work", type=Path, required=True, help="scratch folder (synthetic data, experiments)")
    p.add_argument("--result", type=Path, required=True, help="the step's JSON result, rewritten as it goes")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    args = p.parse_args(argv)
    from softtok.common import setup_logging

    setup_logging()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available() and args.step != "env":
        logger.error("%s: torch sees no CUDA GPU (use --dry-run on a machine without one)", args.step)
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    STEPS[args.step](DRY if args.dry_run else FULL, device, args.result, args.work, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
