"""GPU check: every GPU path of softtok measured in one run of at most 9 minutes, and the report it renders.

    bash tools/gpu_check.sh --out-dir "$OUT"          # on the device machine: the carried wheels first, then this
    python bench/gpu_check.py --out-dir DIR            # the steps alone (installs nothing)
    python bench/gpu_check.py --dry-run --out-dir DIR  # tiny sizes on the CPU, under a minute (tests/test_gpu_check.py)
    python bench/gpu_check.py --render gpu.json --out-dir bench   # GPU.md again from a gpu.json
    python bench/gpu_check.py --not-run --out-dir bench           # the report's state before any GPU run

Each step of bench/gpu_steps.py (env, heads, asr, hifigan, ddp under torchrun, kmeans: the slowest last) runs in a
process group of its own under a time limit: its own, cut to what is left of the budget. A step that fails or
runs out of time is recorded with the end of its output and keeps what it had measured; the next one runs. The
out dir gets GPU.md, gpu.json and gpu_check.log (every step's output), nothing else: a device machine sends back
at most 8 files. Exit status 1 when a step did not finish.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from gpu_report import not_run, render_markdown  # noqa: E402  (bench/ is no package)

STEPS = ("env", "heads", "asr", "hifigan", "ddp", "kmeans")
LIMITS_S = {"env": 45, "heads": 90, "asr": 150, "hifigan": 90, "ddp": 120, "kmeans": 240}
DRY_LIMIT_S = 120
TOTAL_S = 540  # the 9 minutes, counted from tools/gpu_check.sh's start (--started-at)
RENDER_S = 10  # kept back for the report
MIN_STEP_S = 15  # a step given less is skipped


def step_command(name: str, work: Path, dry: bool) -> List[str]:
    """The command of one step; ddp runs under torchrun (one process)."""
    script = [str(BENCH / "gpu_steps.py"), name, "--work", str(work), "--result", str(work / f"{name}.json")]
    script += ["--dry-run"] if dry else []
    if name == "ddp":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *script]
    return [sys.executable, *script]


def log_tail(log: Path, start: int, chars: int = 5000) -> str:
    """The end of what a step wrote to the log (it began at byte ``start``)."""
    with open(log, "rb") as f:
        f.seek(max(start, log.stat().st_size - chars))
        return f.read().decode(errors="replace")


def run_step(cmd: List[str], limit: float, log: Path) -> Dict[str, Any]:
    """Run one step in its own process group with its output appended to ``log``; the group is killed at ``limit``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "ab") as out:
        out.write(f"\n==== {shlex.join(cmd)} (limit {limit:.0f} s)\n".encode())
        out.flush()
        start, t0 = out.tell(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun's worker and any helper process too
            proc.wait()
            status = f"timed out after {limit:.0f} s"
    seconds = time.perf_counter() - t0
    return {"status": status, "seconds": seconds, "limit_s": limit,
            "tail": "" if status == "ok" else log_tail(log, start)}


def run_steps(names: Sequence[str], work: Path, log: Path, dry: bool, deadline: float) -> Dict[str, Any]:
    """Every step in order, each within its limit and the deadline (time.time()); results merged in."""
    steps: Dict[str, Any] = {}
    for name in names:
        limit = min(DRY_LIMIT_S if dry else LIMITS_S[name], deadline - time.time())
        if limit < MIN_STEP_S:
            steps[name] = {"status": f"skipped: {max(limit, 0):.0f} s of the budget left", "seconds": 0.0}
            continue
        steps[name] = run_step(step_command(name, work, dry), limit, log)
        result = work / f"{name}.json"
        if result.is_file():
            steps[name]["result"] = json.loads(result.read_text())
        print(f"gpu_check: {name}: {steps[name]['status']} in {steps[name]['seconds']:.1f} s", flush=True)
    return steps


def install_record(args: argparse.Namespace) -> Dict[str, Any]:
    """What tools/gpu_check.sh installed before the steps: status, seconds, each wheel and its size."""
    if not args.installed_from:
        return {"status": args.install_status or "nothing installed (bench/gpu_check.py run directly)"}
    wheels = sorted(Path(args.installed_from).glob("*.whl"))
    return {"status": args.install_status, "seconds": args.install_seconds, "from": args.installed_from,
            "wheels": [w.name for w in wheels], "mib": sum(w.stat().st_size for w in wheels) / 2 ** 20}


def write_report(results: Dict[str, Any], out_dir: Path) -> None:
    """gpu.json and GPU.md (rendered from it) into ``out_dir``, atomically."""
    sys.path.insert(0, str(ROOT))
    from softtok.tokenizers.fileio import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "gpu.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out_dir / "GPU.md", render_markdown(results))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, required=True, help="GPU.md, gpu.json, gpu_check.log")
    p.add_argument("--work", type=Path, help="scratch folder for data and experiments (default: a new temp folder)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: the same calls, no GPU figure")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run, in this order")
    p.add_argument("--started-at", type=float, help="epoch seconds the whole check began (tools/gpu_check.sh)")
    p.add_argument("--total-s", type=float, default=TOTAL_S, help="the whole check's budget in seconds")
    p.add_argument("--installed-from", help="wheel folder tools/gpu_check.sh installed (for the report)")
    p.add_argument("--install-seconds", type=float)
    p.add_argument("--install-status")
    p.add_argument("--invoked-as", help="the command line to record (tools/gpu_check.sh passes its own)")
    p.add_argument("--render", type=Path, help="rewrite GPU.md from this gpu.json, measuring nothing")
    p.add_argument("--not-run", action="store_true", help="write the report's state before any GPU run")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.render or args.not_run:
        write_report(json.loads(args.render.read_text()) if args.render else not_run(), args.out_dir)
        return 0
    from gpu_steps import DRY, FULL

    started = args.started_at or time.time()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="softtok_gpu_check."))
    work.mkdir(parents=True, exist_ok=True)
    log = args.out_dir / "gpu_check.log"
    log.write_text("")
    steps = run_steps(args.steps, work, log, args.dry_run, started + args.total_s - RENDER_S)
    command = args.invoked_as or shlex.join(["python", "bench/gpu_check.py", *(argv or sys.argv[1:])])
    results = {"state": "dry run" if args.dry_run else "measured", "command": command,
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "total_s": args.total_s, "wall_s": time.time() - started, "install": install_record(args),
               "sizes": asdict(DRY if args.dry_run else FULL), "steps": steps}
    write_report(results, args.out_dir)
    print(f"gpu_check: wrote {args.out_dir / 'GPU.md'} and gpu.json in {results['wall_s']:.0f} s", flush=True)
    return 0 if all(s["status"] == "ok" for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
