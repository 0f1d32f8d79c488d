"""Memory and per-epoch read time of the ASR data, lazy (features read at collate) vs preloaded.

Each mode runs in its own process so its RSS is its own: RSS before and after building ``TokenASRData``,
the build time, and the time to collate every batch of two shuffled epochs through the continuous head
(pure feature reading and padding: the cost that preloading saves). Prints one JSON object.

    python bench/feats_memory.py ~/.cache/softtok/asr-run/dump/whisper/train_sp/feats.scp [--batch-frames 12000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def measure(feats: str, preload: bool, batch_frames: int, epochs: int = 2) -> Dict[str, Any]:
    """RSS and times of one mode, in this process."""
    import torch

    from softtok.downstream.asr.data import TokenASRData
    from softtok.tokenizers.heads import build_head
    torch.set_num_threads(1)
    head = build_head("continuous")
    before = rss_mb()
    t0 = time.perf_counter()
    data = TokenASRData(feats, preload=preload)
    result: Dict[str, Any] = {"preload": preload, "utts": len(data.utts), "frames": sum(data.num_frames.values()),
                              "dim": sum(data.source_dims), "build_s": round(time.perf_counter() - t0, 2),
                              "rss_before_mb": round(before), "rss_after_mb": round(rss_mb())}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for group in data.batches(batch_frames, shuffle=True, seed=epoch):
            data.collate(group, head)
        result[f"epoch{epoch + 1}_read_s"] = round(time.perf_counter() - t0, 2)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("feats")
    p.add_argument("--batch-frames", type=int, default=12000)
    p.add_argument("--mode", choices=("lazy", "preload"), help="one mode in this process (internal)")
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args.feats, args.mode == "preload", args.batch_frames)))
        return 0
    runs = [json.loads(subprocess.run([sys.executable, __file__, args.feats, "--batch-frames", str(args.batch_frames),
                                       "--mode", mode], check=True, capture_output=True, text=True).stdout)
            for mode in ("lazy", "preload")]
    print(json.dumps({"feats": args.feats, "batch_frames": args.batch_frames, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
