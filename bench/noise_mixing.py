"""CPU cost of ``softtok sets add-noise`` (``recipes.augment.add_noise``) per utterance, with its cProfile top entries.

Runs ``add_noise`` once under cProfile timed by ``time.process_time`` (CPU seconds of every thread of the process,
so a busy machine inflates wall time far more than these figures), prints CPU and wall seconds per utterance, the
1-minute load average before and after, and the top entries by cumulative and own CPU time. ``--compare DIR``
checks that every written mixture has the same 16-bit samples as the one of the same id in DIR (a run of other code).
``--plan-only`` mixes nothing: it prints how many babble talkers the plan draws, how many distinct ones, and how many
decodes and bytes the talker cache takes over them (from the audio headers).

    python bench/noise_mixing.py --src data/test200 --noise babble --noise-source data/train_nodev \\
        --out /tmp/noisy --compare /tmp/noisy_before
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Tuple

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softtok.recipes import augment  # noqa: E402
from softtok.recipes.augment import add_noise  # noqa: E402
from softtok.tokenizers.audio import utterance_samples  # noqa: E402
from softtok.tokenizers.datadir import load_data_dir  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="data dir to mix noise into")
    p.add_argument("--noise", default="babble", help="babble or pink")
    p.add_argument("--noise-source", default=None, help="babble talkers' data dir (default: --src)")
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--out", help="output data dir (removed first; required unless --plan-only)")
    p.add_argument("--compare", default=None, help="a data dir of the same mixtures made by other code")
    p.add_argument("--top", type=int, default=12, help="profile entries to print per ordering")
    p.add_argument("--plan-only", action="store_true", help="count the babble draws and distinct talkers; no mixing")
    return p.parse_args()


def profile_text(profile: cProfile.Profile, order: str, top: int) -> str:
    """The ``top`` entries of a profile by ``order``, with paths shortened to their last two parts."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(top)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start:])


def same_samples(out: Path, other: Path) -> int:
    """Number of utterances whose 16-bit samples differ between two noisy data dirs (same ids required)."""
    a, b = load_data_dir(out), load_data_dir(other)
    if a.utt_ids != b.utt_ids:
        raise SystemExit(f"{out} and {other} hold different utterances")
    differ = 0
    for utt in a.utt_ids:
        x, _ = sf.read(a.wav_scp[utt], dtype="int16")
        y, _ = sf.read(b.wav_scp[utt], dtype="int16")
        differ += not np.array_equal(x, y)
    return differ


def plan_counts(src: str, noise_source: str) -> str:
    """Babble draws of the seed-0 plan, and the decodes and peak bytes of add_noise's talker cache over them (its
    own policy, each talker standing in as ones of its length from the audio header: nothing is decoded)."""
    data, pool = load_data_dir(src), load_data_dir(noise_source or src)
    plan = augment._noise_plan(data, pool, "babble", 0)
    draws = [t for utt in data.utt_ids for t in augment._talkers_of(plan[utt])]
    cache, decodes, peak = augment._Talkers(pool, Counter(draws)), 0, 0

    def stand_in(talker: str) -> Tuple[torch.Tensor, float]:
        nonlocal decodes
        decodes += 1
        path, segment = pool.audio_source(talker)
        return torch.ones(utterance_samples(path, talker, segment)), 1.0

    cache._read = stand_in
    for talker in draws:
        cache.get(talker)
        peak = max(peak, cache.kept_bytes)
    return (f"{len(data.utt_ids)} utterances of {src}, babble from {noise_source or src}: {len(draws)} draws of "
            f"{len(set(draws))} distinct talkers; {decodes} decodes with the cache "
            f"(budget {augment.TALKER_CACHE_BYTES / 2 ** 20:.0f} MiB), at most {peak / 2 ** 20:.0f} MiB kept")


def main() -> None:
    args = parse_args()
    if args.plan_only:
        print(plan_counts(args.src, args.noise_source))
        return
    if not args.out:
        raise SystemExit("--out is required to mix")
    shutil.rmtree(args.out, ignore_errors=True)
    n_utts = len(load_data_dir(args.src).utt_ids)
    load_before = os.getloadavg()[0]
    profile = cProfile.Profile(time.process_time)
    cpu, wall = time.process_time(), time.perf_counter()
    profile.runcall(add_noise, args.src, args.out, args.snr, args.noise, 0, args.noise_source)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{args.noise} at {args.snr:g} dB, {n_utts} utterances of {args.src}: CPU {cpu:.1f} s "
          f"({1000 * cpu / n_utts:.0f} ms/utt), wall {wall:.1f} s ({n_utts / wall:.2f} utt/s); "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    for order in ("cumulative", "tottime"):
        print(f"\n-- top {args.top} by {order} (CPU seconds)\n{profile_text(profile, order, args.top)}")
    if args.compare:
        print(f"\n{same_samples(Path(args.out), Path(args.compare))} of {n_utts} mixtures differ from {args.compare}")


if __name__ == "__main__":
    main()
