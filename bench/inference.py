"""Cost of the inference path from audio: wall seconds per stage for the hard, soft dense and soft top-k heads.

The stages are the ones ``softtok transcribe`` runs (``softtok.inference.cli.extract``, then the recipes' decoder
``TokenASRInference.stream``), on the library's own objects, unchanged:

- read: soundfile decode and resampling to 16 kHz (``AudioItem.read``), then the cut into windows of at most the
  model's ``max_utt_frames`` (``split_windows``; sub-stage ``read.split``);
- features: the bundle's featurizer (``ASRModel.features``), one window at a time;
- head: the head on each utterance's features and the padding into a batch (``TokenData.tokens``; sub-stage
  ``head.call``: the head alone);
- model: ``TokenASR.encode``, token embedding (sub-stage ``model.embed``) and encoder; for the fused dense soft
  embedding (``soft`` on CPU) ``TokenASR.encode_soft_features``, whose ``model.embed`` is the soft assignment and
  the embedding in one call, while its head stage only pads the features;
- search: the rest of ``stream``: CTC argmax, collapse, characters (greedy).

Each stage is timed with ``time.perf_counter`` by wrapping the bound method on this run's instances (CUDA
synchronised on a GPU). read and features do not depend on the head: they run once per repeat, and the heads and
models of that repeat decode the same features; a head's end to end is read + features + head + model + search of
one repeat. Figures are medians over ``--repeats``, after one untimed warm-up on two inputs (model loading, the
decoder build, the featurizer's first call). The long recording is also transcribed whole with
``ASRModel.transcribe`` per head (``e2e_direct``: the user-facing call), and its text checked equal to the staged one.

    python bench/inference.py --bundle smoke=/tmp/bench_exp/bundles/asr_hard_k32 \\
        --data-dir /tmp/bench_data/orig/test --long-seconds 600 --out-dir bench
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_report import GOAL, STAGES, verdicts, write_outputs  # noqa: E402  (bench/ is no package)

logger = logging.getLogger("bench.inference")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SAMPLE_RATE = 16000
# decoder settings per bench head; soft is what transcribe runs (fused on CPU), soft_twostep the soft head then
# TokenEmbedding (what it ran before the fused call), soft_topk the top-k head (its k from --top-k)
HEADS = {"hard": {"head": "hard"}, "soft": {"head": "soft"}, "soft_twostep": {"head": "soft", "fused": False},
         "soft_topk": {"head": "soft", "top_k": True}}


class StageClock:
    """Wall seconds per stage name, summed over calls (CUDA synchronised before and after each)."""

    def __init__(self, device: str):
        self.seconds: Dict[str, float] = defaultdict(float)
        self.cuda = str(device).startswith("cuda")

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - t0

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return fn(*args, **kwargs)
        return timed


class TimedHead:
    """A head whose calls are timed; everything else passes through."""

    def __init__(self, head: Any, clock: StageClock):
        self._head, self._call = head, clock.wrap("head.call", head.__call__)

    def __call__(self, feats: torch.Tensor) -> Any:
        return self._call(feats)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._head, name)


@contextlib.contextmanager
def instrumented(decoder: Any, data: Any, clock: StageClock) -> Iterator[None]:
    """Time the head (with batching), the encoder and the embedding of one decoding run; undone on exit."""
    model, head = decoder.model, decoder.head
    data.tokens = clock.wrap("head", data.tokens)
    model.encode = clock.wrap("model", model.encode)
    model.encode_soft_features = clock.wrap("model", model.encode_soft_features)
    model.embedding.soft_from_features = clock.wrap("model.embed", model.embedding.soft_from_features)
    decoder.head = TimedHead(head, clock)
    starts: List[float] = []
    pre = model.embedding.register_forward_pre_hook(lambda *_: starts.append(_now(clock)))
    post = model.embedding.register_forward_hook(
        lambda *_: clock.seconds.__setitem__("model.embed", clock.seconds["model.embed"] + _now(clock) - starts.pop()))
    try:
        yield
    finally:
        pre.remove()
        post.remove()
        del model.encode, model.encode_soft_features, model.embedding.soft_from_features
        decoder.head = head


def _now(clock: StageClock) -> float:
    clock._sync()
    return time.perf_counter()


# ---------------------------------------------------------------- inputs


def make_long_recording(data_dir: str, seconds: float, out: Path) -> Dict[str, Any]:
    """``out``: the data dir's utterances, in order, concatenated into one 16 kHz wav of at least ``seconds``."""
    from softtok.inference.inputs import collect_inputs
    from softtok.tokenizers.audio import write_audio

    parts, total, used = [], 0, 0
    for item in collect_inputs([data_dir]):
        if total >= seconds * SAMPLE_RATE:
            break
        parts.append(item.read(SAMPLE_RATE))
        total, used = total + len(parts[-1]), used + 1
    if total < seconds * SAMPLE_RATE:
        raise ValueError(f"{data_dir}: only {total / SAMPLE_RATE:.0f} s of audio, {seconds:g} s asked")
    write_audio(out, torch.cat(parts).numpy(), SAMPLE_RATE)
    info = {"path": str(out), "seconds": round(total / SAMPLE_RATE, 3), "utterances": used, "source": data_dir}
    out.with_suffix(".json").write_text(json.dumps(info) + "\n")  # what a later run reusing it records
    return info


def read_windows(items: Sequence[Any], max_frames: int, clock: StageClock) -> Dict[str, torch.Tensor]:
    """Every input read at 16 kHz and cut into windows, as ``softtok transcribe`` reads them (keys ``key#j``)."""
    from softtok.inference.model import split_windows

    windows: Dict[str, torch.Tensor] = {}
    with clock.stage("read"):
        for item in items:
            wave = item.read(SAMPLE_RATE)
            with clock.stage("read.split"):
                parts = split_windows(wave, max_frames)
            windows.update({f"{item.key}#{j:03d}": part for j, part in enumerate(parts)})
    return windows


def featurize(model: Any, windows: Dict[str, torch.Tensor], clock: StageClock) -> Dict[str, np.ndarray]:
    """(T, D) features of every window."""
    with clock.stage("features"):
        return {key: model.features(wave, SAMPLE_RATE, key) for key, wave in windows.items()}


def joined(hyps: Dict[str, str]) -> Dict[str, str]:
    """Window texts joined per input (``key#j`` in order), as transcribe joins them."""
    texts: Dict[str, List[str]] = defaultdict(list)
    for window in sorted(hyps):
        texts[window.rsplit("#", 1)[0]].append(hyps[window])
    return {key: " ".join(t for t in parts if t) for key, parts in texts.items()}


# ---------------------------------------------------------------- models and heads


def head_settings(model: Any, heads: Sequence[str], tau: Optional[float], tau_factor: float, top_k: int,
                  feats: Dict[str, np.ndarray]) -> Dict[str, Dict[str, Any]]:
    """Keyword arguments of ``model.decoder`` per head: τ given, else the bundle's τ*, else ``tau_factor`` × the
    median nearest squared distance of ``feats`` (a bundle without a dev sweep)."""
    if tau is None and "tau" in model.default_head:
        tau = model.default_head["tau"]
    if tau is None:
        from softtok.tokenizers.streams import nearest_sqdist

        frames = torch.from_numpy(np.concatenate(list(feats.values())))
        tau = float(f"{tau_factor * float(nearest_sqdist(model.codebooks[0], frames).median()):.4g}")
    out = {}
    for name in heads:
        conf = dict(HEADS[name])
        out[name] = {**conf, **({"tau": tau} if conf["head"] == "soft" else {}),
                     **({"top_k": top_k} if conf.get("top_k") else {})}
    return out


def decode_timed(model: Any, feats: Dict[str, np.ndarray], settings: Dict[str, Any], clock: StageClock,
                 batch_frames: int) -> Dict[str, str]:
    """Hypotheses of ``feats`` through the recipes' decoder, with head, model and search timed."""
    from softtok.downstream.asr.data import TokenASRData
    from softtok.downstream.data import ArrayFeatures

    decoder = model.decoder(**settings, search="greedy")
    data = TokenASRData(ArrayFeatures(feats, model.source_dims))
    groups = decoder.groups(data, batch_frames)
    hyps: Dict[str, str] = {}
    with instrumented(decoder, data, clock), clock.stage("decode"):
        for batch in decoder.stream(data, groups):
            hyps.update(batch)
    clock.seconds["search"] = clock.seconds.pop("decode") - clock.seconds["head"] - clock.seconds["model"]
    return hyps


def load_models(bundles: Dict[str, str], device: str) -> Tuple[Dict[str, Any], Dict[str, float]]:
    """Each bundle's ASRModel (all must share one featurizer spec) and its load seconds."""
    import softtok

    models, seconds = {}, {}
    for label, path in bundles.items():
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            models[label] = softtok.load(path, device)
        seconds[label] = round(time.perf_counter() - t0, 3)
    specs = {label: [{k: v for k, v in s.items() if k != "codebook"} for s in m.bundle.sources]
             for label, m in models.items()}
    first = next(iter(specs.values()))
    for label, spec in specs.items():
        if spec != first:
            raise ValueError(f"{bundles[label]}: another featurizer than {next(iter(bundles.values()))}; "
                             "bench bundles of one featurizer together")
    return models, seconds


def model_info(model: Any) -> Dict[str, Any]:
    """What the model is: size, codebook K, encoder, the training config's file."""
    decoder = model.decoder(head="hard", search="greedy")
    return {"parameters": sum(p.numel() for p in decoder.model.parameters()),
            "K": [cb.n_clusters for cb in model.codebooks or []], "encoder": model.config["model"].get("encoder"),
            "embed_dim": model.config["model"].get("embed_dim"), "max_frames": model.max_frames,
            "random_weights": bool(model.config.get("random_weights")), "bundle": str(model.bundle.path)}


# ---------------------------------------------------------------- one set


def load_average() -> List[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(max_load: float, max_wait_s: float, poll_s: float = 20.0) -> Dict[str, Any]:
    """Wait (at most ``max_wait_s``) until the 1-minute load average is at most ``max_load``."""
    t0 = time.perf_counter()
    while os.getloadavg()[0] > max_load and time.perf_counter() - t0 < max_wait_s:
        logger.info("load %.2f > %.2f: waiting", os.getloadavg()[0], max_load)
        time.sleep(poll_s)
    return {"waited_s": round(time.perf_counter() - t0, 1), "loadavg_at_start": load_average()}


def run_repeat(models: Dict[str, Any], items: Sequence[Any], settings: Dict[str, Dict[str, Dict[str, Any]]],
               batch_frames: int, device: str, rotation: int) -> Dict[str, Any]:
    """One timed pass: read and features once, then every model and head on the same features."""
    clock = StageClock(device)
    first = next(iter(models.values()))
    windows = read_windows(items, min(m.max_frames for m in models.values()), clock)
    feats = featurize(first, windows, clock)
    shared = {k: clock.seconds[k] for k in ("read", "read.split", "features")}
    out: Dict[str, Any] = {"shared": shared, "loadavg": load_average(), "models": {},
                           "audio_s": sum(len(w) for w in windows.values()) / SAMPLE_RATE, "windows": len(windows)}
    del windows  # the waves: only the features are decoded
    for label, model in models.items():
        names = list(settings[label])
        names = names[rotation % len(names):] + names[:rotation % len(names)]  # no head always first or last
        out["models"][label] = {}
        for name in names:
            head_clock = StageClock(device)
            hyps = decode_timed(model, feats, settings[label][name], head_clock, batch_frames)
            out["models"][label][name] = {"seconds": dict(head_clock.seconds), "texts": joined(hyps)}
    return out


def e2e_direct(models: Dict[str, Any], path: str, settings: Dict[str, Dict[str, Dict[str, Any]]],
               repeats: int) -> Dict[str, Dict[str, Any]]:
    """``ASRModel.transcribe([path])`` timed whole per model and head (median of ``repeats``)."""
    out: Dict[str, Dict[str, Any]] = {}
    for label, model in models.items():
        out[label] = {}
        for name, conf in settings[label].items():
            times, text = [], ""
            for _ in range(repeats):
                t0 = time.perf_counter()
                text = model.transcribe([path], **conf)[0]
                times.append(time.perf_counter() - t0)
            out[label][name] = {"seconds": times, "median_s": statistics.median(times), "text": text}
    return out


def summarise(repeats: List[Dict[str, Any]], audio_s: float) -> Dict[str, Any]:
    """Median seconds and RTF per stage, model and head; end to end; soft / hard ratios and the goal."""
    med = lambda xs: statistics.median(xs)  # noqa: E731
    shared = {k: med([r["shared"][k] for r in repeats]) for k in ("read", "read.split", "features")}
    out: Dict[str, Any] = {"shared_s": shared, "models": {}}
    for label in repeats[0]["models"]:
        rows = {}
        for name in repeats[0]["models"][label]:
            runs = [r["models"][label][name]["seconds"] for r in repeats]
            e2e = [r["shared"]["read"] + r["shared"]["features"] + s["head"] + s["model"] + s["search"]
                   for r, s in zip(repeats, runs)]
            stages = {**shared, **{k: med([s.get(k, 0.0) for s in runs]) for k in
                                   ("head", "head.call", "model", "model.embed", "search")}}
            rows[name] = {"seconds": stages, "rtf": {k: v / audio_s for k, v in stages.items()},
                          "e2e_s": med(e2e), "e2e_rtf": med(e2e) / audio_s, "e2e_runs_s": e2e,
                          "head_model_search_s": stages["head"] + stages["model"] + stages["search"]}
        out["models"][label] = {"heads": rows, "ratios": ratios(rows, repeats, label)}
    return out


def ratios(rows: Dict[str, Any], repeats: List[Dict[str, Any]], label: str) -> Dict[str, Any]:
    """Each soft head's end to end over hard's (median runs; per-repeat range) and over the head-dependent part."""
    if "hard" not in rows:
        return {}
    out = {}
    for name in (n for n in rows if n != "hard"):
        per_repeat = [s / h for s, h in zip(rows[name]["e2e_runs_s"], rows["hard"]["e2e_runs_s"])]
        ratio = rows[name]["e2e_s"] / rows["hard"]["e2e_s"]
        out[name] = {"e2e": ratio, "e2e_per_repeat": per_repeat, "goal": GOAL, "goal_holds": ratio <= GOAL,
                     "head_model_search": rows[name]["head_model_search_s"] / rows["hard"]["head_model_search_s"]}
    return out


def dominant(rows: Dict[str, Any]) -> Dict[str, Any]:
    """The stage with the largest share of a head's end to end, and every stage's share."""
    shares = {k: rows["seconds"][k] / rows["e2e_s"] for k in STAGES}
    return {"stage": max(shares, key=shares.get), "shares": shares}


def run_set(name: str, models: Dict[str, Any], items: Sequence[Any], args: argparse.Namespace,
            settings: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """``args.repeats`` timed passes over one input set, summarised."""
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    logger.info("%s: %d inputs, load %s", name, len(items), quiet["loadavg_at_start"])
    repeats = []
    for r in range(args.repeats):
        repeats.append(run_repeat(models, items, settings, args.batch_frames, args.device, r))
        logger.info("%s repeat %d: %s", name, r + 1, json.dumps(_brief(repeats[-1])))
    audio_s = repeats[0]["audio_s"]
    summary = summarise(repeats, audio_s)
    for block in summary["models"].values():
        for rows in block["heads"].values():
            rows["dominant"] = dominant(rows)
    texts = {label: {h: r["texts"] for h, r in heads.items()} for label, heads in repeats[0]["models"].items()}
    for r in repeats:
        for heads in r["models"].values():
            for rec in heads.values():
                rec.pop("texts")
    return {"inputs": len(items), "windows": repeats[0]["windows"], "audio_s": audio_s, **quiet,
            "loadavg_at_end": load_average(), "repeats": repeats, **summary, "_texts": texts}


def _brief(repeat: Dict[str, Any]) -> Dict[str, Any]:
    return {"shared": {k: round(v, 2) for k, v in repeat["shared"].items()},
            **{f"{label}/{h}": {k: round(v, 2) for k, v in r["seconds"].items()}
               for label, heads in repeat["models"].items() for h, r in heads.items()}}


# ---------------------------------------------------------------- the record


def machine() -> Dict[str, Any]:
    """CPU, cores, threads, library versions and the commit the figures come from."""
    import ctranslate2

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "ctranslate2_threads": torch.get_num_threads(), "torch": torch.__version__,
            "ctranslate2": ctranslate2.__version__, "python": platform.python_version(),
            "cuda_visible": torch.cuda.is_available(), "commit": commit,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def check_long_texts(result: Dict[str, Any], direct: Dict[str, Dict[str, Any]]) -> None:
    """Record whether transcribe's text of the long recording equals the staged decode's."""
    for label, heads in direct.items():
        for name, rec in heads.items():
            staged = next(iter(result["_texts"][label][name].values()))
            rec["same_text_as_staged"] = rec["text"] == staged
            rec.pop("text")


# ---------------------------------------------------------------- main


def bundle_arg(value: str) -> Tuple[str, str]:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected LABEL=BUNDLE_DIR")
    return label, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/inference.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", type=bundle_arg, action="append", required=True, metavar="LABEL=DIR",
                   help="an ASR bundle (softtok export) and its label; repeat for several (one featurizer)")
    p.add_argument("--data-dir", required=True, help="the utterance set (Kaldi data dir, wav.scp or audio folder)")
    p.add_argument("--max-utts", type=int, default=0, help="the first N inputs of --data-dir (0: all)")
    p.add_argument("--long-seconds", type=float, default=600.0,
                   help="also one recording of at least this long, the set's utterances concatenated (0: none)")
    p.add_argument("--long-audio", help="where that recording is (made if missing; default: in --work-dir)")
    p.add_argument("--work-dir", default="/tmp/softtok_bench_inference")
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--tau", type=float, help="soft τ (default: the bundle's τ*, else --tau-factor × the median "
                                              "nearest squared distance of the features)")
    p.add_argument("--tau-factor", type=float, default=0.02)
    p.add_argument("--top-k", type=int, default=8, help="k of the soft top-k head")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--e2e-repeats", type=int, help="transcribe() runs per head on the long recording "
                                                   "(default: --repeats; 0: none)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch (and CTranslate2) threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-frames", type=int, default=20000)
    p.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-minute load to fall to this")
    p.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for it at most, then run anyway")
    p.add_argument("--commands", help="a file of the commands that made the bundles, copied into INFERENCE.md")
    p.add_argument("--out-dir", required=True, help="writes inference.json and INFERENCE.md here")
    return p


def input_sets(args: argparse.Namespace) -> Tuple[Dict[str, List[Any]], Optional[Dict[str, Any]]]:
    """The utterance set and, unless --long-seconds 0, the long recording (made when missing)."""
    from softtok.inference.inputs import collect_inputs

    items = collect_inputs([args.data_dir])
    sets = {Path(args.data_dir).name: items[:args.max_utts] if args.max_utts else items}
    if not args.long_seconds:
        return sets, None
    path = Path(args.long_audio or Path(args.work_dir) / f"long_{args.long_seconds:g}s.wav")
    if path.is_file():
        sidecar = path.with_suffix(".json")
        long = {**(json.loads(sidecar.read_text()) if sidecar.is_file() else {"path": str(path)}), "made_now": False}
    else:
        long = {**make_long_recording(args.data_dir, args.long_seconds, path), "made_now": True}
    sets["long"] = collect_inputs([str(path)])
    return sets, long


def run(args: argparse.Namespace) -> Dict[str, Any]:
    torch.set_num_threads(args.threads)
    models, load_s = load_models(dict(args.bundle), args.device)
    sets, long = input_sets(args)
    warm_clock = StageClock(args.device)
    first = next(iter(models.values()))
    warm_feats = featurize(first, read_windows(next(iter(sets.values()))[:2], first.max_frames, warm_clock), warm_clock)
    settings = {label: head_settings(m, args.heads, args.tau, args.tau_factor, args.top_k, warm_feats)
                for label, m in models.items()}
    for label, model in models.items():  # warm-up: decoders built, first calls made, untimed
        for conf in settings[label].values():
            decode_timed(model, warm_feats, conf, StageClock(args.device), args.batch_frames)
    record: Dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "bundle"},
                              "bundles": dict(args.bundle), "models": {k: model_info(m) for k, m in models.items()},
                              "load_s": load_s, "head_settings": settings, "long_recording": long, "sets": {},
                              "commands": commands(args)}
    for name, items in sets.items():
        record["sets"][name] = run_set(name, models, items, args, settings)
    e2e_repeats = args.repeats if args.e2e_repeats is None else args.e2e_repeats
    if long and e2e_repeats:
        record["e2e_direct"] = e2e_direct(models, long["path"], settings, e2e_repeats)
        check_long_texts(record["sets"]["long"], record["e2e_direct"])
    for res in record["sets"].values():
        res.pop("_texts")
    write_outputs(record, Path(args.out_dir))
    return record


def commands(args: argparse.Namespace) -> List[str]:
    """The commands that made the bundles (``--commands``), then this one."""
    made = Path(args.commands).read_text(encoding="utf-8").rstrip().splitlines() if args.commands else []
    return made + [shlex.join(["python", "bench/inference.py", *sys.argv[1:]])]


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = run(args)
    for name, res in record["sets"].items():
        for line in verdicts(res):
            logger.info("%s %s", name, line)
    logger.info("wrote %s", Path(args.out_dir) / "INFERENCE.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
