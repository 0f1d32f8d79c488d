"""Full-scale recipe cost: FLOPs and 1-thread CPU seconds of each heavy operation, extrapolated to the recipes.

No GPU is needed: cost does not depend on weight values, so every model is the recipe's real architecture with
random weights. Measured here (one CPU thread, median of ``--repeats`` after one warm-up):

- HuBERT-large (the project's torchaudio build, ``SSLFeaturizer``'s way: layers past 21 deleted) on 10 s of audio;
- one E-Branchformer training step (hard head on 1024-dim features + forward + backward + Adam) of
  ``egs/librispeech_100/asr/conf/train_gpu.yaml``, built as ``softtok.downstream.asr.train`` builds it, on a few
  utterances of the train-clean-100 mean length; FLOPs scale linearly to the config's batch;
- one HiFi-GAN training step (``hifigan._train_step``: generator, both discriminators, both optimizers) of
  ``egs/piper_joe/voc/conf/hifigan_gpu.yaml`` on its configured batch of crops;
- faiss-cpu Lloyd iterations (D=1024, K=128/1024/4096) at two N, and the k-means++ seeding of
  ``softtok.tokenizers.kmeans.kmeans_plusplus_init`` (sklearn, CPU) at two small K.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention: not elementwise
ops) or, for k-means, from the GEMM count 2·N·K·D. Totals for the recipes and GPU-hour *estimates*
(FLOPs / (peak × utilisation)) follow. Writes bench/full_scale_cost.json and bench/FULL_SCALE_COST.md.

    python bench/full_scale_cost.py            # ~10-15 min of one core
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shlex
import statistics
import string
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger("bench.full_scale_cost")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ASR_CONF = ROOT / "egs/librispeech_100/asr/conf/train_gpu.yaml"
VOC_CONF = ROOT / "egs/piper_joe/voc/conf/hifigan_gpu.yaml"
FRAME_RATE = 50.0           # SSL / token frames per second
SAMPLE_RATE = 16000

# HuBERT-large (fairseq hubert_large_ll60k = torchaudio.models.hubert_large): the arch dict of ssl_checkpoint._build.
HUBERT_LARGE: Dict[str, Any] = {
    "extractor_mode": "layer_norm", "conv_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
    "conv_bias": False, "dim": 1024, "ffn_dim": 4096, "num_layers": 24, "num_heads": 16, "pos_kernel": 128,
    "pos_groups": 16, "layer_norm_first": True, "num_buckets": 320, "max_distance": 800,
}

# Corpus sizes. LibriSpeech: Panayotov et al. (2015), Table 1, and the corpus' utterance counts; the others are
# approximate published sizes (marked approx), except speechocean762 test, summed from the wav files in
# ../shared/data/speechocean762/test (2,500 utts). Not checked against the real trees.
LIBRI_TRAIN_HOURS, LIBRI_TRAIN_UTTS = 100.6, 28539
EVAL_HOURS: Dict[str, Tuple[float, str]] = {
    "dev_clean": (5.4, "LibriSpeech paper"), "dev_other": (5.3, "LibriSpeech paper"),
    "test_clean": (5.4, "LibriSpeech paper"), "test_other": (5.1, "LibriSpeech paper"),
    "tedlium2_test": (2.6, "approx (11 talks, 1,155 segments)"),
    "chime4_et05_real": (2.2, "approx (1,320 utts)"), "chime4_et05_simu": (2.2, "approx (1,320 utts)"),
    "l2arctic": (24.0, "approx (24 speakers × ~1 h, all utterances are a test set)"),
    "speechocean762_test": (2.69, "summed from the wav files here"),
}
DEV_UTTS = 2703 + 2864      # dev-clean + dev-other: the ASR validation set of every epoch
LJ_UTTS, LJ_HOURS = 13100, 23.9   # LJSpeech-1.1; the recipe holds out n_dev=100 + n_test=100
LJ_HELD_OUT = 200
KM_PORTION = 0.3            # egs/librispeech_100/asr/run.sh km_portion
KS = (128, 1024, 4096)
CHARS_PER_SECOND = 15.0     # assumption: read English ≈ 2.7 words/s × ~5.5 characters (with the space)

# NVIDIA H100 SXM5 datasheet, dense (no sparsity), FLOP/s.
H100_PEAK = {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12}
UTILISATION = (0.2, 0.4)


# ----------------------------------------------------------------------------- measuring
def set_threads(n: int) -> None:
    """``n`` threads for torch, faiss (OpenMP) and numpy/sklearn (BLAS, OpenMP) alike."""
    import faiss
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(limits=n)


def conv_backward_flops(grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int], _bias: Any,
                        _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                        _groups: int, output_mask: Sequence[bool], out_shape: Any = None) -> int:
    """Convolution backward: each of grad-input and grad-weight costs what the forward convolution costs.

    Replaces torch's formula, whose grad-weight term ignores ``groups`` and so counts a grouped convolution's
    weight gradient ``groups`` times over (512× for the E-Branchformer's depthwise convolutions, torch 2.9).
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (matmul/conv/attention, forward and any backward inside ``fn``) of one call of ``fn``."""
    fix = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=fix) as counter:
        fn()
    return int(counter.get_total_flops())


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Dict[str, Any]:
    """CPU seconds (this process, all its threads) and wall seconds per call, with the 1-min load average.

    CPU time is what the machine's other load inflates least; wall time is kept for reference.
    """
    for _ in range(warmup):
        fn()
    cpu, wall, load = [], [], []
    for _ in range(repeats):
        load.append(os.getloadavg()[0])
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_s": cpu, "cpu_s_median": statistics.median(cpu), "wall_s": wall,
            "wall_s_median": statistics.median(wall), "loadavg_1min": load}


# ----------------------------------------------------------------------------- models
def build_ssl(arch: Dict[str, Any], layer: int) -> torch.nn.Module:
    """The untrained torchaudio HuBERT of ``arch`` with the layers past ``layer`` deleted (as SSLFeaturizer)."""
    from softtok.tokenizers.features.ssl_checkpoint import _build, parse_conv_layers

    model = _build({**arch, "conv_layers": parse_conv_layers(arch["conv_layers"])}, wavlm=False)
    del model.encoder.transformer.layers[layer:]
    return model.eval().requires_grad_(False)  # FlopCounterMode's module hooks fail on grad-requiring params
                                               # under inference_mode (torch 2.9)


def ssl_forward(model: torch.nn.Module, seconds: float, layer: int) -> Callable[[], Any]:
    """A call running ``model`` up to ``layer`` on ``seconds`` of random 16 kHz audio (inference mode)."""
    wave = torch.randn(1, int(seconds * SAMPLE_RATE))

    def run() -> Any:
        with torch.inference_mode():
            return model.extract_features(wave, None, num_layers=layer)[0][-1]
    return run


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_asr(conf_path: Path, n_tokens: Optional[int], feat_dim: Optional[int] = None
              ) -> Tuple[torch.nn.Module, Dict[str, Any], int]:
    """(TokenASR, run config, vocabulary size) as ``asr.train`` builds them, for a lower-case character vocabulary."""
    from softtok.downstream.asr import train as asr_train
    from softtok.downstream.asr.model import CharTokenizer
    from softtok.tokenizers.fileio import load_yaml

    conf = {**asr_train.DEFAULTS, **load_yaml(str(conf_path))}
    tokenizer = CharTokenizer.from_texts([string.ascii_lowercase + "' "])
    config = {**conf, "token_list": tokenizer.token_list, "n_tokens": n_tokens, "feat_dim": feat_dim}
    return asr_train.build_model(config).train(), conf, len(tokenizer.token_list)


def asr_step(model: torch.nn.Module, conf: Dict[str, Any], vocab: int, batch: int, frames: int, chars: int,
             k: Optional[int], dim: int = 1024, seed: int = 0) -> Callable[[], Any]:
    """One training step as ``asr.train._run_epoch``: per-utterance head on (frames, dim) features (hard with a
    random K-centroid codebook, or continuous when ``k`` is None), padding, forward, backward, clip, Adam."""
    from softtok.downstream.data import pad_token_inputs
    from softtok.downstream.training import optimizer_step
    from softtok.tokenizers.heads import TokenInput, build_head
    from softtok.tokenizers.kmeans import Codebook

    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(frames, dim, generator=gen) for _ in range(batch)]
    head = build_head("hard", Codebook(torch.randn(k, dim, generator=gen).numpy())) if k else \
        (lambda x: TokenInput("feats", feats=x))
    ys = torch.randint(2, vocab - 1, (batch, chars), generator=gen)
    y_lens = torch.full((batch,), chars, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"])

    def run() -> Any:
        tokens, lengths = pad_token_inputs([head(f) for f in feats])
        loss, _ = model(tokens, lengths, ys, y_lens)
        optimizer_step(model, opt, loss, conf["grad_clip"])
    return run


def asr_forward(model: torch.nn.Module, vocab: int, batch: int, frames: int, chars: int, k: Optional[int],
                dim: int = 1024, seed: int = 0) -> Callable[[], Any]:
    """Forward only (the validation pass of every epoch; hard ids, or features when ``k`` is None; no head)."""
    from softtok.tokenizers.heads import TokenInput

    gen = torch.Generator().manual_seed(seed)
    tokens = TokenInput("ids", ids=torch.randint(0, k, (batch, frames, 1), generator=gen)) if k else \
        TokenInput("feats", feats=torch.randn(batch, frames, dim, generator=gen))
    lengths = torch.full((batch,), frames, dtype=torch.long)
    ys = torch.randint(2, vocab - 1, (batch, chars), generator=gen)
    y_lens = torch.full((batch,), chars, dtype=torch.long)

    def run() -> Any:
        with torch.no_grad():
            return model(tokens, lengths, ys, y_lens)
    return run


def build_hifigan(conf_path: Path, n_tokens: int) -> Tuple[Any, Any, Any, List[Any], Dict[str, Any]]:
    """(generator, discriminator, losses, [opt_g, opt_d], conf) as ``hifigan._train`` builds them."""
    from softtok.downstream.vocoder import hifigan
    from softtok.tokenizers.fileio import load_yaml

    conf = {**hifigan.DEFAULTS, **load_yaml(str(conf_path))}
    config = {**conf, "n_tokens": n_tokens, "feat_dim": None}
    gen, disc = hifigan.build_generator(config), hifigan.build_discriminator(config)
    losses = hifigan.GANLosses(conf["mel_loss"], conf["lambda_mel"], conf["lambda_feat_match"], conf["lambda_adv"])
    opts = [torch.optim.AdamW(m.parameters(), lr=conf["lr"], betas=tuple(conf["betas"]),
                              weight_decay=conf["weight_decay"]) for m in (gen, disc)]
    return gen.train(), disc.train(), losses, opts, conf


def hifigan_step(parts: Tuple[Any, Any, Any, List[Any], Dict[str, Any]], batch: int, segment_frames: int,
                 seed: int = 0) -> Callable[[], Any]:
    """One ``hifigan._train_step`` on ``batch`` random crops of ``segment_frames`` token frames."""
    from softtok.downstream.vocoder import hifigan
    from softtok.tokenizers.heads import TokenInput

    gen, disc, losses, opts, conf = parts
    g = torch.Generator().manual_seed(seed)
    tokens = TokenInput("ids", ids=torch.randint(0, gen.n_tokens, (batch, segment_frames, 1), generator=g))
    y = 0.1 * torch.randn(batch, 1, segment_frames * hifigan.HOP, generator=g)
    return lambda: hifigan._train_step(gen, disc, losses, *opts, tokens, y, conf["grad_clip"])


# ----------------------------------------------------------------------------- k-means
def lloyd_flops(n: int, k: int, d: int) -> float:
    """FLOPs of one Lloyd iteration's distance GEMM (N×D by D×K, 2 FLOPs per multiply-add)."""
    return 2.0 * n * k * d


def faiss_points_used(n: int, k: int, max_points_per_centroid: int) -> int:
    """Points faiss k-means trains on: it subsamples to K·max_points_per_centroid when N is larger."""
    return min(n, k * max_points_per_centroid)


def learn_faiss_max_ppc(n: int, k: int) -> int:
    """``max_points_per_centroid`` that ``softtok.tokenizers.kmeans.learn_faiss`` passes to faiss."""
    return max(256, -(-n // k))


def kmeanspp_flops(k: int, d: int, sample: int = 40) -> float:
    """GEMM FLOPs of sklearn's greedy k-means++ on ``sample·K`` points: per centre, 2+⌊ln K⌋ candidates
    against every point (``kmeans_plusplus_init`` draws its seeds from a ``sample × K`` subset)."""
    trials = 2 + int(np.log(k))
    return 2.0 * k * trials * sample * k * d


def faiss_iteration(n: int, k: int, d: int, niter: int, seed: int = 0) -> Callable[[], Any]:
    """A call training faiss k-means as learn_faiss does (same max_points_per_centroid), from given seeds."""
    import faiss

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    init = np.ascontiguousarray(x[rng.choice(n, k, replace=False)])

    def run() -> Any:
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, gpu=False, verbose=False,
                          max_points_per_centroid=learn_faiss_max_ppc(n, k), spherical=False)
        km.train(x, init_centroids=init)
        return km
    return run


def kmeanspp_call(k: int, d: int, seed: int = 0) -> Callable[[], Any]:
    """``kmeans_plusplus_init`` on exactly its ``40·K`` subset size of random frames."""
    from softtok.tokenizers.kmeans import kmeans_plusplus_init

    x = np.random.default_rng(seed).standard_normal((40 * k, d), dtype=np.float32)
    return lambda: kmeans_plusplus_init(x, k, seed)


def seconds_per_unit(points: Sequence[Tuple[float, float]]) -> Tuple[float, float]:
    """(seconds per unit of work fitted through the origin, linearity = (t2/t1)/(w2/w1)) of (work, seconds)."""
    (w1, t1), (w2, t2) = points[0], points[-1]
    rate = sum(t for _, t in points) / sum(w for w, _ in points)
    return rate, (t2 / t1) / (w2 / w1)


# ----------------------------------------------------------------------------- extrapolation
def gpu_hours(flops: float, peak: float, utilisation: float) -> float:
    """Estimated device hours: FLOPs / (peak FLOP/s × utilisation)."""
    return flops / (peak * utilisation) / 3600.0


def gpu_range(flops: float, precision: str) -> List[float]:
    """[hours at the highest, at the lowest assumed utilisation] on an H100 at ``precision``'s dense peak."""
    return [gpu_hours(flops, H100_PEAK[precision], u) for u in sorted(UTILISATION, reverse=True)]


def asr_steps_per_epoch(utts: int, frames_per_utt: int, batch_frames: int) -> Tuple[int, int]:
    """(utterances per batch, steps per epoch) of equal-length utterances under ``batch_frames`` padded frames."""
    per_batch = max(1, batch_frames // frames_per_utt)
    return per_batch, math.ceil(utts / per_batch)


def hifigan_steps_per_epoch(train_utts: int, segments_per_utt: int, batch_size: int) -> int:
    """``WaveVocoderData.segment_batches``: every utterance ``segments_per_utt`` times, in groups of ``batch_size``."""
    return math.ceil(train_utts * segments_per_utt / batch_size)


def eval_hours() -> float:
    return sum(h for h, _ in EVAL_HOURS.values())


# ----------------------------------------------------------------------------- sections
def _log_timing(name: str, flops: Optional[float], t: Dict[str, Any]) -> None:
    logger.info("%s: %s FLOPs, CPU %.2f s (median of %s), load %s", name,
                f"{flops:.3e}" if flops else "-", t["cpu_s_median"], [round(c, 2) for c in t["cpu_s"]],
                [round(x, 2) for x in t["loadavg_1min"]])


def hubert_section(seconds: float, layer: int, repeats: int) -> Dict[str, Any]:
    """HuBERT-large FLOPs and CPU seconds on ``seconds`` of audio up to ``layer``."""
    model = build_ssl(HUBERT_LARGE, layer)
    fn = ssl_forward(model, seconds, layer)
    flops = count_flops(fn)
    t = measure(fn, repeats)
    _log_timing(f"hubert-large l{layer} {seconds:g} s", flops, t)
    return {"audio_s": seconds, "layer": layer, "params_run": n_params(model), "flops": flops, **t}


def asr_section(conf_path: Path, batch: int, frames: int, chars: int, repeats: int) -> Dict[str, Any]:
    """E-Branchformer train-step FLOPs per K (hard head included) and continuous, forward FLOPs, CPU at K=1024."""
    out: Dict[str, Any] = {"batch_measured": batch, "frames": frames, "chars": chars, "per_k": {}}
    for k in (*KS, None):
        model, conf, vocab = build_asr(conf_path, k, None if k else 1024)
        fn = asr_step(model, conf, vocab, batch, frames, chars, k)
        name = f"k{k}" if k else "continuous"
        row = {"params": n_params(model), "step_flops": count_flops(fn),
               "forward_flops": count_flops(asr_forward(model, vocab, batch, frames, chars, k))}
        if k == 1024:
            row.update(measure(fn, repeats))
            _log_timing(f"asr step {name} B={batch} T={frames}", row["step_flops"], row)
        else:
            logger.info("asr step %s B=%d: %.3e FLOPs", name, batch, row["step_flops"])
        out["per_k"][name] = row
        out["conf"] = {key: conf[key] for key in ("batch_frames", "max_epoch", "max_utt_frames", "warmup_steps")}
    out["vocab"] = vocab
    return out


def hifigan_section(conf_path: Path, batch: Optional[int], repeats: int, n_tokens: int = 128) -> Dict[str, Any]:
    """HiFi-GAN train-step FLOPs and CPU seconds on the config's batch (or ``batch`` crops)."""
    parts = build_hifigan(conf_path, n_tokens)
    conf = parts[-1]
    b = batch or conf["batch_size"]
    fn = hifigan_step(parts, b, conf["segment_frames"])
    flops = count_flops(fn)
    t = measure(fn, repeats)
    _log_timing(f"hifigan step B={b}", flops, t)
    gen_fwd = count_flops(lambda: generator_forward(parts[0], b, conf["segment_frames"]))
    return {"batch_measured": b, "conf": {key: conf[key] for key in
                                          ("batch_size", "segment_frames", "segments_per_utt", "max_epoch")},
            "gen_params": n_params(parts[0]), "disc_params": n_params(parts[1]), "flops": flops,
            "generator_forward_flops": gen_fwd, **t}


def generator_forward(gen: torch.nn.Module, batch: int, segment_frames: int) -> torch.Tensor:
    """The generator alone on ``batch`` crops of token ids (no gradient): what synthesis costs."""
    from softtok.tokenizers.heads import TokenInput

    with torch.no_grad():
        return gen(TokenInput("ids", ids=torch.zeros(batch, segment_frames, 1, dtype=torch.long)))


def faiss_section(ns: Sequence[int], ks: Sequence[int], d: int, niter: int, repeats: int) -> Dict[str, Any]:
    """faiss-cpu seconds per Lloyd iteration per (N, K), and the fitted seconds per N·K·D."""
    rows, fits = [], {}
    for k in ks:
        pts = []
        for n in ns:
            t = measure(faiss_iteration(n, k, d, niter), repeats, warmup=0)
            per_iter = t["cpu_s_median"] / niter
            rows.append({"N": n, "K": k, "D": d, "niter": niter, "cpu_s_per_iter": per_iter,
                         "gflops_per_s": lloyd_flops(n, k, d) / per_iter / 1e9, **t})
            logger.info("faiss N=%d K=%d D=%d: %.2f CPU s/iter (%.1f GFLOP/s), load %s", n, k, d, per_iter,
                        rows[-1]["gflops_per_s"], [round(x, 2) for x in t["loadavg_1min"]])
            pts.append((float(n) * k * d, per_iter))
        rate, lin = seconds_per_unit(pts)
        fits[str(k)] = {"s_per_nkd": rate, "linearity": lin}
    return {"rows": rows, "fits": fits}


def kmeanspp_section(ks: Sequence[int], d: int, repeats: int) -> Dict[str, Any]:
    """sklearn k-means++ seeding (as kmeans_plusplus_init) at small K; seconds per analytic GEMM FLOP."""
    rows, pts = [], []
    for k in ks:
        t = measure(kmeanspp_call(k, d), repeats, warmup=0)
        flops = kmeanspp_flops(k, d)
        rows.append({"K": k, "D": d, "points": 40 * k, "flops": flops, **t})
        logger.info("k-means++ K=%d D=%d on %d points: %.2f CPU s (%.1f GFLOP/s), load %s", k, d, 40 * k,
                    t["cpu_s_median"], flops / t["cpu_s_median"] / 1e9, [round(x, 2) for x in t["loadavg_1min"]])
        pts.append((flops, t["cpu_s_median"]))
    rate, lin = seconds_per_unit(pts)
    return {"rows": rows, "s_per_flop": rate, "linearity": lin}


# ----------------------------------------------------------------------------- totals
def config_value(conf_path: Path, key: str) -> Any:
    """``key`` of a training config as the file says now (the schedule the totals describe; not a measured cost)."""
    from softtok.tokenizers.fileio import load_yaml

    return load_yaml(str(conf_path))[key]


def totals(r: Dict[str, Any], niter: int) -> Dict[str, Any]:
    """Per-recipe FLOPs, CPU hours (1 thread, extrapolated from the measurements) and H100 GPU-hour estimates."""
    out: Dict[str, Any] = {}
    hub = r["hubert"]
    train_h, ev_h = LIBRI_TRAIN_HOURS, eval_hours()
    per_hour = hub["flops"] * 3600 / hub["audio_s"]
    cpu_per_hour = hub["cpu_s_median"] * 3600 / hub["audio_s"]
    out["features"] = {"hours": train_h + ev_h, "train_hours": train_h, "eval_hours": ev_h,
                       "flops_per_audio_hour": per_hour, "flops": per_hour * (train_h + ev_h),
                       "cpu_hours_1thread": cpu_per_hour * (train_h + ev_h) / 3600,
                       "x_realtime_1thread": hub["audio_s"] / hub["cpu_s_median"]}
    asr = r["asr"]
    b, frames = asr["batch_measured"], asr["frames"]
    per_batch, steps = asr_steps_per_epoch(LIBRI_TRAIN_UTTS, frames, asr["conf"]["batch_frames"])
    epochs = asr["conf"]["max_epoch"]
    cpu_step_b = asr["per_k"]["k1024"]["cpu_s_median"]
    out["asr"] = {"utts_per_batch": per_batch, "steps_per_epoch": steps, "epochs": epochs,
                  "total_steps": steps * epochs, "warmup_steps": config_value(ASR_CONF, "warmup_steps"), "per_k": {}}
    for name, row in asr["per_k"].items():
        train_flops = row["step_flops"] / b * LIBRI_TRAIN_UTTS * epochs
        valid_flops = row.get("forward_flops", 0) / b * DEV_UTTS * epochs
        out["asr"]["per_k"][name] = {
            "step_flops_full_batch": row["step_flops"] / b * per_batch, "train_flops": train_flops,
            "valid_flops": valid_flops, "flops": train_flops + valid_flops,
            "cpu_hours_1thread": (cpu_step_b / b * LIBRI_TRAIN_UTTS * epochs / 3600
                                  * row["step_flops"] / asr["per_k"]["k1024"]["step_flops"])}
    out["asr"]["all_models_flops"] = sum(v["flops"] for v in out["asr"]["per_k"].values())
    voc = r["hifigan"]
    vc = voc["conf"]
    steps_v = hifigan_steps_per_epoch(LJ_UTTS - LJ_HELD_OUT, vc["segments_per_utt"], vc["batch_size"])
    scale = vc["batch_size"] / voc["batch_measured"]
    step_flops = voc["flops"] * scale
    out["hifigan"] = {"steps_per_epoch": steps_v, "epochs": vc["max_epoch"], "total_steps": steps_v * vc["max_epoch"],
                      "step_flops": step_flops, "flops_per_model": step_flops * steps_v * vc["max_epoch"],
                      "models": 2, "cpu_hours_1thread_per_model":
                          voc["cpu_s_median"] * scale * steps_v * vc["max_epoch"] / 3600}
    out["hifigan"]["flops"] = out["hifigan"]["flops_per_model"] * 2
    n_km = int(round(KM_PORTION * LIBRI_TRAIN_HOURS * 3600 * FRAME_RATE))
    d = r["faiss"]["rows"][0]["D"]
    out["kmeans"] = {"N": n_km, "D": d, "niter": niter, "per_k": {}}
    for k in KS:
        used = faiss_points_used(n_km, k, learn_faiss_max_ppc(n_km, k))
        fit = r["faiss"]["fits"].get(str(k))
        lloyd = lloyd_flops(used, k, d) * niter
        pp = kmeanspp_flops(k, d)
        out["kmeans"]["per_k"][str(k)] = {
            "points_used": used, "points_used_faiss_default_256": faiss_points_used(n_km, k, 256),
            "lloyd_flops": lloyd, "kmeanspp_flops": pp,
            "lloyd_cpu_hours_1thread": fit["s_per_nkd"] * used * k * d * niter / 3600 if fit else None,
            "kmeanspp_cpu_hours_1thread": r["kmeanspp"]["s_per_flop"] * pp / 3600}
    for block in (out["features"], *out["asr"]["per_k"].values(), out["hifigan"]):
        block["h100_hours_fp32"] = gpu_range(block["flops"], "fp32")
        block["h100_hours_bf16"] = gpu_range(block["flops"], "bf16")
    for row in out["kmeans"]["per_k"].values():
        row["h100_hours_fp32_lloyd"] = gpu_range(row["lloyd_flops"], "fp32")
    return out


# ----------------------------------------------------------------------------- report
def machine_info() -> Dict[str, Any]:
    import faiss

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "faiss": faiss.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads()}


def _h(v: Sequence[float]) -> str:
    return f"{v[0]:.2g}–{v[1]:.2g}"


def _load(t: Dict[str, Any]) -> str:
    return "/".join(f"{x:.1f}" for x in t["loadavg_1min"])


def render_markdown(r: Dict[str, Any]) -> str:
    """FULL_SCALE_COST.md text from the results dict."""
    m, tot = r["machine"], r["totals"]
    hub, asr, voc = r["hubert"], r["asr"], r["hifigan"]
    u = "–".join(f"{x:.0%}" for x in UTILISATION)
    lines = [
        "# Full-scale recipe cost (measured on CPU; GPU hours estimated from the measured FLOPs)", "",
        f"Command: `{r['command']}`" + (f" (measurements); totals and this file re-rendered from its JSON with "
                                         f"`{r['rendered_by']}`" if r.get("rendered_by") else ""), "",
        *[f"Measured again on {m_['date']} (1-min load {m_['loadavg'][0]:.1f}), after a change to the code they time: "
          f"{', '.join(m_['sections'])}, with `{m_['command']}`; every other section is from the first run." for m_ in
          r.get("remeasured", [])], *([""] if r.get("remeasured") else []),
        f"Date: {r['date']}, wall time {r['wall_seconds'] / 60:.1f} min. Machine: {m['cpu_count']} CPUs ({m['cpu']}), "
        f"torch {m['torch']}, faiss {m['faiss']}, numpy {m['numpy']}; **1 thread** for torch, faiss and BLAS. "
        "Another job was running on the machine, so CPU seconds (this process's `time.process_time`) are reported, "
        "not wall time; the 1-minute load average at each timed repeat is listed beside it. Every CPU figure is the "
        f"median of the repeats after a warm-up (none for k-means). Random weights and random inputs of the real "
        "shapes: cost does not depend on the values.", "",
        "FLOPs: `torch.utils.flop_counter.FlopCounterMode` (matmul, convolution, attention; elementwise ops are not "
        "counted), forward + backward where a training step is measured; k-means: the distance GEMM, 2·N·K·D per "
        "iteration. GPU hours are **estimates**: FLOPs / (H100 SXM dense peak × utilisation), utilisation "
        f"{u} assumed (not measured). Peaks: fp32 {H100_PEAK['fp32'] / 1e12:.1f} TFLOP/s (no tensor cores), bf16 "
        f"{H100_PEAK['bf16'] / 1e12:.1f} TFLOP/s. The trainers run in plain fp32 (no autocast; PyTorch leaves TF32 "
        "off for matmuls and on for cuDNN convolutions), so the fp32 column is the one that applies; bf16 is what "
        "AMP would allow (not configured).", "",
        "## Measured operations", "",
        "| operation | size | FLOPs | CPU s (1 thread), median | repeats | load avg (1 min) |", "|---|---|---|---|---|---|",
        f"| HuBERT-large forward up to layer {hub['layer']} ({hub['params_run'] / 1e6:.0f} M params run) | "
        f"{hub['audio_s']:g} s of 16 kHz audio | {hub['flops']:.3e} | {hub['cpu_s_median']:.2f} | "
        f"{len(hub['cpu_s'])} | {_load(hub)} |"]
    k1 = asr["per_k"]["k1024"]
    lines.append(f"| E-Branchformer train step, hard K=1024 ({k1['params'] / 1e6:.1f} M params; head + fwd + bwd + "
                 f"Adam) | {asr['batch_measured']} utts × {asr['frames']} frames, {asr['chars']} chars | "
                 f"{k1['step_flops']:.3e} | {k1['cpu_s_median']:.2f} | {len(k1['cpu_s'])} | {_load(k1)} |")
    lines.append(f"| HiFi-GAN train step (G {voc['gen_params'] / 1e6:.1f} M + D {voc['disc_params'] / 1e6:.1f} M "
                 f"params) | {voc['batch_measured']} crops × {voc['conf']['segment_frames']} frames "
                 f"({voc['conf']['segment_frames'] * 320} samples) | {voc['flops']:.3e} | {voc['cpu_s_median']:.2f} | "
                 f"{len(voc['cpu_s'])} | {_load(voc)} |")
    for row in r["faiss"]["rows"]:
        lines.append(f"| faiss-cpu Lloyd iteration (learn_faiss settings) | N={row['N']:,}, K={row['K']}, D={row['D']} "
                     f"| {lloyd_flops(row['N'], row['K'], row['D']):.3e} | {row['cpu_s_per_iter']:.2f} per iter "
                     f"({row['niter']} iters timed, {row['gflops_per_s']:.0f} GFLOP/s) | {len(row['cpu_s'])} | "
                     f"{_load(row)} |")
    for row in r["kmeanspp"]["rows"]:
        lines.append(f"| k-means++ seeding (`kmeans_plusplus_init`, sklearn) | K={row['K']}, {row['points']:,} points, "
                     f"D={row['D']} | {row['flops']:.3e} | {row['cpu_s_median']:.2f} | {len(row['cpu_s'])} | "
                     f"{_load(row)} |")
    lines += ["", "Linearity checks (time ratio ÷ work ratio between the two sizes; 1.00 = linear): faiss " +
              ", ".join(f"K={k}: {f['linearity']:.2f}" for k, f in r["faiss"]["fits"].items()) +
              f"; k-means++: {r['kmeanspp']['linearity']:.2f}.", "",
              "Other ASR FLOPs per step of the measured batch (counted, not timed): " +
              ", ".join(f"{name} {row['step_flops']:.3e} ({row['params'] / 1e6:.2f} M params)"
                        for name, row in asr["per_k"].items()) + f". HiFi-GAN generator forward alone: "
              f"{voc['generator_forward_flops']:.3e} FLOPs per step.", ""]
    f, a, v, km = tot["features"], tot["asr"], tot["hifigan"], tot["kmeans"]
    lines += [
        "## Recipe totals", "",
        "### egs/librispeech_100/asr", "",
        f"Sizes used: train-clean-100 {LIBRI_TRAIN_HOURS} h / {LIBRI_TRAIN_UTTS:,} utts (mean "
        f"{LIBRI_TRAIN_HOURS * 3600 / LIBRI_TRAIN_UTTS:.1f} s); dev and test sets {f['eval_hours']:.1f} h (" +
        ", ".join(f"{name} {h:g} h ({src})" for name, (h, src) in EVAL_HOURS.items()) + "). Text "
        f"{CHARS_PER_SECOND:g} characters/s (assumption). k-means on {KM_PORTION:.0%} of the train frames: "
        f"N = {km['N']:,}, niter = {km['niter']} (learn_faiss default; the recipe passes no options).", "",
        "| stage | FLOPs | CPU hours, 1 thread (extrapolated from measured) | H100 hours fp32, estimate | "
        "H100 hours bf16 (AMP, not configured), estimate |", "|---|---|---|---|---|",
        f"| HuBERT-large l21 features, {f['hours']:.0f} h of audio ({f['flops_per_audio_hour']:.2e} FLOPs per audio "
        f"hour; {f['x_realtime_1thread']:.2f}× real time on 1 thread) | {f['flops']:.2e} | {f['cpu_hours_1thread']:.0f} | "
        f"{_h(f['h100_hours_fp32'])} | {_h(f['h100_hours_bf16'])} |"]
    for name, row in a["per_k"].items():
        dev = "+ dev forward each epoch" if row["valid_flops"] else "dev forward not counted (not in this run)"
        lines.append(f"| ASR training {name}: {a['epochs']} epochs × {a['steps_per_epoch']} steps "
                     f"({a['utts_per_batch']} utts/step), {dev} | {row['flops']:.2e} | "
                     f"{row['cpu_hours_1thread']:.0f} | {_h(row['h100_hours_fp32'])} | {_h(row['h100_hours_bf16'])} |")
    all_cpu = sum(row["cpu_hours_1thread"] for row in a["per_k"].values())
    lines.append(f"| ASR training, all {len(a['per_k'])} models one after another | {a['all_models_flops']:.2e} | "
                 f"{all_cpu:.0f} | {_h(gpu_range(a['all_models_flops'], 'fp32'))} | "
                 f"{_h(gpu_range(a['all_models_flops'], 'bf16'))} |")
    for k, row in km["per_k"].items():
        cpu = row["lloyd_cpu_hours_1thread"]
        lines.append(f"| k-means K={k}: {km['niter']} Lloyd iterations on {row['points_used']:,} points (faiss) | "
                     f"{row['lloyd_flops']:.2e} | {cpu:.1f} | {_h(row['h100_hours_fp32_lloyd'])} (faiss-gpu) | – |")
        lines.append(f"| k-means K={k}: k-means++ seeding, sklearn on the CPU even with faiss-gpu | "
                     f"{row['kmeanspp_flops']:.2e} | {row['kmeanspp_cpu_hours_1thread']:.2f} | (CPU) | – |")
    lines += [
        "", f"The ASR schedule: {a['total_steps']:,} optimizer steps in {a['epochs']} epochs, "
        f"against warmup_steps = {a['warmup_steps']:,} ({ASR_CONF.relative_to(ROOT)} when this file was rendered"
        + ("" if a["warmup_steps"] == asr["conf"]["warmup_steps"] else
           f"; the measured run read {asr['conf']['warmup_steps']:,}, which changes no step's cost") + ").", "",
        "### egs/ljspeech/voc (conf/hifigan_gpu.yaml)", "",
        f"LJSpeech {LJ_UTTS:,} utts ({LJ_HOURS} h), {LJ_UTTS - LJ_HELD_OUT:,} train after dev/test_id; "
        f"{v['steps_per_epoch']:,} steps/epoch × {v['epochs']} epochs = {v['total_steps']:,} steps per model, "
        f"{v['models']} models (hard, continuous).", "",
        "| stage | FLOPs | CPU hours, 1 thread (extrapolated from measured) | H100 hours fp32, estimate | "
        f"H100 hours TF32 ({H100_PEAK['tf32'] / 1e12:.1f} TFLOP/s), estimate | H100 hours bf16, estimate |",
        "|---|---|---|---|---|---|",
        f"| HiFi-GAN training, one model ({v['step_flops']:.2e} FLOPs/step) | {v['flops_per_model']:.2e} | "
        f"{v['cpu_hours_1thread_per_model']:.0f} | {_h(gpu_range(v['flops_per_model'], 'fp32'))} | "
        f"{_h(gpu_range(v['flops_per_model'], 'tf32'))} | {_h(gpu_range(v['flops_per_model'], 'bf16'))} |",
        f"| HiFi-GAN training, both models | {v['flops']:.2e} | {2 * v['cpu_hours_1thread_per_model']:.0f} | "
        f"{_h(v['h100_hours_fp32'])} | {_h(gpu_range(v['flops'], 'tf32'))} | {_h(v['h100_hours_bf16'])} |", "",
        "HiFi-GAN is convolution-bound with small channel counts at high sample rates (16–64 channels at 4–16 kHz); "
        "cuDNN runs its fp32 convolutions in TF32 by default, so the fp32 column is a pessimistic bound for the "
        "compute part and memory bandwidth may bound it instead. All GPU figures are estimates, not measurements.",
        ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
SECTIONS = ("hubert", "asr", "hifigan", "faiss", "kmeanspp")


def measure_section(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Measure one section (a key of the results JSON) with the command-line settings."""
    if name == "hubert":
        return hubert_section(args.audio_seconds, args.layer, args.repeats)
    if name == "asr":
        frames = int(round(LIBRI_TRAIN_HOURS * 3600 / LIBRI_TRAIN_UTTS * FRAME_RATE))
        return asr_section(ASR_CONF, args.asr_batch, frames, int(round(frames / FRAME_RATE * CHARS_PER_SECOND)),
                           args.repeats)
    if name == "hifigan":
        return hifigan_section(VOC_CONF, args.voc_batch or None, args.repeats)
    if name == "faiss":
        return faiss_section(args.faiss_n, KS, 1024, args.faiss_niter, args.repeats)
    return kmeanspp_section(args.kmeanspp_k, 1024, args.repeats)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=BENCH, help="where full_scale_cost.json and FULL_SCALE_COST.md go")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--audio-seconds", type=float, default=10.0, help="audio per HuBERT-large forward")
    p.add_argument("--layer", type=int, default=21)
    p.add_argument("--asr-batch", type=int, default=4,
                   help="utterances per timed ASR step (FLOPs scale linearly to the config's batch_frames)")
    p.add_argument("--voc-batch", type=int, default=4,
                   help="crops per timed HiFi-GAN step (0: the config's; FLOPs and time scale linearly to it)")
    p.add_argument("--faiss-n", type=int, nargs=2, default=[50000, 100000])
    p.add_argument("--faiss-niter", type=int, default=2, help="Lloyd iterations per timed faiss run")
    p.add_argument("--kmeanspp-k", type=int, nargs=2, default=[256, 1024])
    p.add_argument("--niter", type=int, default=10, help="the recipe's Lloyd iterations (learn_faiss default)")
    p.add_argument("--render", type=Path, help="measure nothing: recompute the totals of this results JSON and "
                                               "rewrite both files (after a change to the arithmetic or the text)")
    p.add_argument("--remeasure", nargs="+", choices=SECTIONS, default=[],
                   help="with --render: measure these sections again (after a change to the code they time), "
                        "keep the others from the JSON; the markdown says which were measured when")
    return p.parse_args(argv)


def write(r: Dict[str, Any], out_dir: Path) -> None:
    """full_scale_cost.json and FULL_SCALE_COST.md into ``out_dir``, atomically."""
    from softtok.common import jsonable
    from softtok.tokenizers.fileio import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "full_scale_cost.json", json.dumps(jsonable(r), indent=1) + "\n")
    atomic_write_text(out_dir / "FULL_SCALE_COST.md", render_markdown(r))
    logger.info("wrote %s and %s", out_dir / "full_scale_cost.json", out_dir / "FULL_SCALE_COST.md")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure everything on one thread, extrapolate, write the JSON and the markdown; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t_start = time.perf_counter()
    command = shlex.join(["python", "bench/full_scale_cost.py", *(sys.argv[1:] if argv is None else argv)])
    if args.remeasure and not args.render:
        raise SystemExit("--remeasure needs --render RESULTS.json (the run whose other sections are kept)")
    if args.render:
        r = json.loads(args.render.read_text())
        if args.remeasure:
            set_threads(1)
            torch.manual_seed(0)
            for name in args.remeasure:
                r[name] = measure_section(name, args)
            r.setdefault("remeasured", []).append(
                {"sections": args.remeasure, "command": command, "loadavg": os.getloadavg(),
                 "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
        r["totals"], r["rendered_by"] = totals(r, args.niter), command
        write(r, args.out_dir)
        return 0
    set_threads(1)
    torch.manual_seed(0)
    r: Dict[str, Any] = {"command": command, "machine": machine_info(),
                         "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                         "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                         "loadavg_start": os.getloadavg()}
    for name in SECTIONS:
        r[name] = measure_section(name, args)
    r["totals"] = totals(r, args.niter)
    r["wall_seconds"] = time.perf_counter() - t_start
    r["loadavg_end"] = os.getloadavg()
    write(r, args.out_dir)
    logger.info("done in %.1f min", r["wall_seconds"] / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
