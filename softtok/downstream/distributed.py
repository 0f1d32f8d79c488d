"""Data-parallel training under ``torchrun`` (DistributedDataParallel): the trainers' few distributed steps.

Every rank builds the same shuffled batch list and takes every ``world``-th batch of it; the last
``len % world`` batches of each training epoch are dropped (different ones each epoch, as the list
is reshuffled), so every rank takes the same number of optimizer steps and no collective waits
forever. Validation keeps every batch: ranks evaluate without collectives and only sum their totals.

Loss normalisation: the ASR and vocoder losses are means over a batch's items (utterances, frames)
and DDP averages gradients over ranks, so a plain DDP step weights a rank's items by 1/(world·n_rank)
rather than 1/n_total. :func:`scale_loss` multiplies each rank's loss by world·n_rank/n_total, which
makes one DDP step the step on the union of the ranks' batches (tested against one process).

Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) no process group exists and every function here is a
no-op, so single-process training is exactly as before. A group its caller made itself is used as it is, one
rank included: then the model is wrapped in DDP and the collectives run (bench/gpu_check.py checks nccl on one
GPU this way). BatchNorm statistics stay per rank (as
ESPnet's default, no SyncBatchNorm); the ASR configs' E-Branchformer has none.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Tuple, TypeVar

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")


def in_group() -> bool:
    """True while a process group exists (torchrun's, or one the caller made, of any size)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if in_group() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    """True on the rank that writes files (checkpoints, logs, configs, the final model)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if in_group():
        dist.barrier()


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"WORLD_SIZE must be a positive integer, got {value!r}")
    return int(value)


@contextmanager
def session(device: str) -> Iterator[str]:
    """Join torchrun's process group for the block when ``WORLD_SIZE`` > 1; yields the device to train on.

    gloo on CPU; nccl on CUDA with device ``cuda:LOCAL_RANK``. A group that already exists is used as is
    (and left open). Ranks other than 0 log warnings and errors only, for the rest of the process.
    """
    if env_world_size() == 1 or dist.is_initialized():
        yield _local_device(device) if dist.is_initialized() else device
        return
    device = _local_device(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _local_device(device: str) -> str:
    """``cuda:LOCAL_RANK`` for a CUDA device under torchrun (one GPU per process), else ``device``."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if device.startswith("cuda") else device


def wrap(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when in a process group (one rank included), else ``model`` itself.

    ``static_graph``: the set of parameters a step uses never changes, which lets DDP accept parameters
    no loss reaches (e.g. the CTC layer at ``ctc_weight: 0``) without searching the graph every step.
    """
    if not in_group():
        return model
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    logger.info("distributed training: %d ranks (%s), rank 0 on %s", world_size(), dist.get_backend(), device)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper (for its other methods, e.g. a loss outside ``forward``), or ``model``."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def shard(groups: Sequence[T], drop_remainder: bool = True) -> List[T]:
    """This rank's share of a batch list that every rank built alike: batches ``rank``, ``rank + world``, ...

    ``drop_remainder`` (training) drops the last ``len % world`` batches so every rank takes as many steps.
    """
    world, me = world_size(), rank()
    end = len(groups) - len(groups) % world if drop_remainder else len(groups)
    if drop_remainder and end == 0 and len(groups) > 0:
        raise ValueError(f"{len(groups)} training batches for {world} ranks: lower batch_frames or run fewer ranks")
    if end < len(groups):
        logger.info("%d batches over %d ranks: %d each, the last %d dropped", len(groups), world, end // world,
                    len(groups) - end)
    return list(groups[me:end:world])


def scale_loss(loss: torch.Tensor, n: int) -> torch.Tensor:
    """This rank's loss (a mean over its ``n`` items) rescaled so DDP's gradient average is the mean over all items."""
    if not in_group():
        return loss
    world = world_size()
    total = torch.tensor([float(n)], device=loss.device)
    dist.all_reduce(total)
    return loss * (world * n / float(total.item()))


def sum_stats(totals: Dict[str, float], n: float) -> Tuple[Dict[str, float], float]:
    """Weighted stat sums and the weight summed over ranks (a rank with no batch may hold no keys)."""
    if not in_group():
        return totals, n
    gathered: List[Tuple[Dict[str, float], float]] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, (totals, n))
    summed: Dict[str, float] = {}
    for part, _ in gathered:
        for key, value in part.items():
            summed[key] = summed.get(key, 0.0) + value
    return summed, sum(w for _, w in gathered)


def seed_rank(seed: int, epoch: int) -> None:
    """Distinct, reproducible torch RNG streams per (seed, epoch, rank) for dropout and masking (no-op in one process).

    Checkpoints hold rank 0's RNG state, so without this every rank would resume with the same stream.
    """
    if world_size() > 1:
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank()]).generate_state(1)[0]))
