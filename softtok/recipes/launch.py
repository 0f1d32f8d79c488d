"""Run a sharded dump on this machine (``--nj N``) or as a Slurm array job, like Kaldi/ESPnet's run.pl / slurm.pl.

The command must be a shardable softtok dump (``dump-features``, ``dump-tokens``): it accepts ``--nj N``
(N local processes), ``--shard i/N`` (one shard) and ``--merge N`` (merge N finished shards).

- ``--cmd local``: runs ``COMMAND --nj N`` here.
- ``--cmd slurm``: writes ``LOG_DIR/NAME.sbatch`` (an array of N tasks, task i running ``COMMAND --shard i/N``,
  its log in ``LOG_DIR/NAME.<i>.log``, resources from ``--slurm-conf``), submits it with ``sbatch --wait`` (so a
  run.sh stage ends only when every task has), then runs ``COMMAND --merge N`` here. ``--dry-run`` only writes
  the script.

    softtok launch --cmd slurm --nj 8 --log-dir exp/log --name dump_train \\
        --slurm-conf egs/tools/slurm.yaml -- softtok dump-features --data-dir data/train \\
        --feature whisper --out-dir dump/whisper/train
"""

from __future__ import annotations

import argparse
import getpass
import logging
import shlex
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from softtok.common import run_job, setup_logging
from softtok.tokenizers.fileio import atomic_write_text, load_yaml
from softtok.tokenizers.workers import STOP_GRACE_S, exit_on_signals

logger = logging.getLogger("softtok.launch")

SHARD_OPTIONS = ("--nj", "--shard", "--merge")
DONE_LINE = "# softtok task done"  # the last line of a task's log when its command succeeded


class LaunchError(RuntimeError):
    """A launched command or array task failed."""


@dataclass
class SlurmConf:
    """sbatch resources of every task of an array (ESPnet's conf/slurm.conf as YAML)."""

    partition: Optional[str] = None
    gpus: int = 0                     # --gres=gpu:N per task
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None         # e.g. 16G
    time: Optional[str] = None        # e.g. 04:00:00
    max_parallel: Optional[int] = None  # at most this many tasks at once (--array=0-(N-1)%M)
    extra: List[str] = field(default_factory=list)  # more sbatch options, e.g. [--account=speech, --qos=normal]

    @classmethod
    def load(cls, path: Optional[str]) -> "SlurmConf":
        """Read a YAML mapping of the fields above; an unknown key is an error naming the file and the key."""
        if not path:
            return cls()
        data = load_yaml(path)
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{path}: unknown slurm option {key!r}; known: {sorted(known)}")
        if not isinstance(data.get("extra", []), list):
            raise ValueError(f"{path}: 'extra' must be a list of sbatch options")
        return cls(**data)

    def directives(self) -> List[str]:
        """The resource ``#SBATCH`` options (without the array, name and output ones)."""
        opts = [f"--partition={self.partition}" if self.partition else None,
                f"--gres=gpu:{self.gpus}" if self.gpus else None,
                f"--cpus-per-task={self.cpus_per_task}" if self.cpus_per_task else None,
                f"--mem={self.mem}" if self.mem else None,
                f"--time={self.time}" if self.time else None]
        return [o for o in opts if o] + [str(o) for o in self.extra]


def check_command(command: Sequence[str], nj: int) -> None:
    """Refuse an empty command, a bad nj, or one that sets the shard options the launcher adds."""
    if not command:
        raise ValueError("no command given (put it after --)")
    if nj < 1:
        raise ValueError(f"--nj must be >= 1, got {nj}")
    taken = [a for a in command if a.split("=", 1)[0] in SHARD_OPTIONS]
    if taken:
        raise ValueError(f"the command already has {' '.join(taken)}: leave --nj/--shard/--merge to the launcher")


def task_log(log_dir: Path, name: str, rank: int | str) -> Path:
    """Where array task ``rank`` logs (``%a`` is Slurm's array index)."""
    return log_dir / f"{name}.{rank}.log"


def sbatch_script(command: Sequence[str], nj: int, name: str, log_dir: Path, conf: SlurmConf,
                  workdir: Path) -> str:
    """The bash script of an N-task array: task i runs ``COMMAND --shard i/N`` in ``workdir``."""
    array = f"0-{nj - 1}" + (f"%{conf.max_parallel}" if conf.max_parallel and conf.max_parallel < nj else "")
    directives = [f"--job-name={name}", f"--array={array}", f"--output={task_log(log_dir.resolve(), name, '%a')}",
                  *conf.directives()]
    lines = ["#!/usr/bin/env bash",
             f"# softtok.recipes.launch: {name}, {nj} array tasks; then `{shlex.join([*command, '--merge', str(nj)])}`",
             *(f"#SBATCH {d}" for d in directives),
             "set -euo pipefail",
             f"cd {shlex.quote(str(workdir.resolve()))}",
             f'echo "# task ${{SLURM_ARRAY_TASK_ID}}/{nj} on $(hostname), $(date -u +%FT%TZ)"',
             f'{shlex.join(command)} --shard "${{SLURM_ARRAY_TASK_ID}}/{nj}"',
             f'echo "{DONE_LINE}"']
    return "\n".join(lines) + "\n"


def unfinished_tasks(log_dir: Path, name: str, nj: int) -> List[int]:
    """Array tasks whose log does not end with the done line (failed, killed or never started)."""
    def finished(rank: int) -> bool:
        log = task_log(log_dir, name, rank)
        return log.is_file() and log.read_text(errors="replace").rstrip().endswith(DONE_LINE)
    return [r for r in range(nj) if not finished(r)]


def _run(argv: Sequence[str], what: str, not_found: str = "") -> None:
    """Run a command in the foreground; a missing program or a non-zero exit is a LaunchError. SIGTERM or SIGINT
    here stops the command with SIGTERM (so its own workers stop too) before this process exits."""
    logger.info("running %s", shlex.join(argv))
    try:
        proc = subprocess.Popen(list(argv))
    except FileNotFoundError:
        raise LaunchError(f"{argv[0]}: command not found{not_found}") from None
    with exit_on_signals():
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if rc != 0:
        raise LaunchError(f"{what} failed (exit {rc}): {shlex.join(argv)}")


def run_local(command: Sequence[str], nj: int) -> Dict[str, Any]:
    """``COMMAND --nj N`` on this machine."""
    _run([*command, "--nj", str(nj)], "local job")
    return {"cmd": "local", "nj": nj}


def run_slurm(command: Sequence[str], nj: int, name: str, log_dir: Path, conf: SlurmConf,
              dry_run: bool = False) -> Dict[str, Any]:
    """Write and submit the array job (``sbatch --wait``), then merge its shards here."""
    script = log_dir / f"{name}.sbatch"
    atomic_write_text(script, sbatch_script(command, nj, name, log_dir, conf, Path.cwd()))
    if dry_run:
        return {"cmd": "slurm", "nj": nj, "script": str(script), "submitted": False}
    try:
        _run(["sbatch", "--wait", str(script)], "sbatch", " (not a Slurm login node? --cmd local runs here)")
    except SystemExit:  # stopped (SIGTERM, Ctrl-C): stopping sbatch --wait leaves the array queued, so cancel it
        cancel_array(name)
        raise
    except LaunchError as exc:
        failed = unfinished_tasks(log_dir, name, nj)
        logs = ", ".join(str(task_log(log_dir, name, r)) for r in failed[:3]) + (" ..." if len(failed) > 3 else "")
        raise LaunchError(f"array job {name}: {len(failed)} of {nj} tasks did not finish"
                          f"{' (see ' + logs + ')' if failed else ''}; {exc}") from None
    _run([*command, "--merge", str(nj)], "merge")
    return {"cmd": "slurm", "nj": nj, "script": str(script), "logs": str(task_log(log_dir, name, "*"))}


def cancel_array(name: str) -> None:
    """``scancel`` this user's jobs named ``name`` (the array just submitted: job names are the launcher's --name)."""
    argv = ["scancel", f"--name={name}", f"--user={getpass.getuser()}"]
    logger.warning("stopped: cancelling the array job (%s)", shlex.join(argv))
    try:
        subprocess.run(argv, check=False, timeout=STOP_GRACE_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.error("could not cancel array job %s (%s): cancel it with %s", name, exc, shlex.join(argv))


def launch(command: Sequence[str], cmd: str, nj: int, name: str, log_dir: str,
           slurm_conf: Optional[str] = None, dry_run: bool = False) -> Dict[str, Any]:
    """Run a shardable command with ``cmd`` (local | slurm) on ``nj`` shards."""
    check_command(command, nj)
    if cmd == "local":
        return run_local(command, nj)
    return run_slurm(command, nj, name, Path(log_dir), SlurmConf.load(slurm_conf), dry_run)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m softtok.recipes.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cmd", choices=["local", "slurm"], default="local")
    p.add_argument("--nj", type=int, required=True, help="shards: local processes or array tasks")
    p.add_argument("--name", default="job", help="job name: LOG_DIR/NAME.sbatch, LOG_DIR/NAME.<i>.log")
    p.add_argument("--log-dir", default="log", help="where the sbatch script and task logs go")
    p.add_argument("--slurm-conf", help="YAML: partition, gpus, cpus_per_task, mem, time, max_parallel, extra")
    p.add_argument("--dry-run", action="store_true", help="slurm: only write the sbatch script")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... (a softtok dump)")
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Entry point; returns the exit status (1 with one error line when the job or a task fails)."""
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return run_job(f"launch {args.name}", lambda: launch(command, args.cmd, args.nj, args.name, args.log_dir,
                                                            args.slurm_conf, args.dry_run), logger)
    except LaunchError as exc:
        logger.error("launch %s: %s", args.name, exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
