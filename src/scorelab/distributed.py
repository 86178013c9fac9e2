"""Multi-process runs under ``torchrun``: the process group (NCCL on GPUs, gloo on CPU), one device per
local rank, and the few helpers the training loop and sampling need. Without ``WORLD_SIZE`` in the
environment nothing here creates a process group, and every helper answers as a single process would."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether this process was started by torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def active() -> bool:
    """Whether a process group is up (more than one process may take part)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, else torchrun's ``RANK``, else 0."""
    if active():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def world_size() -> int:
    """The number of processes: the process group's, else torchrun's ``WORLD_SIZE``, else 1."""
    if active():
        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def device_for(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device becomes the local rank's GPU (``cuda:LOCAL_RANK``)."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def init(device: torch.device) -> bool:
    """Join torchrun's process group (NCCL for CUDA, gloo otherwise) once; returns whether one is up.
    A single process (no ``WORLD_SIZE``) creates nothing."""
    if active():
        return True
    if not launched():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device_for(device))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def cleanup() -> None:
    if active():
        dist.destroy_process_group()


@contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """``init`` on entry; on exit, tear down the group only if this context created it."""
    created = not active() and init(device)
    try:
        yield active()
    finally:
        if created:
            cleanup()


def shard(n: int) -> slice:
    """This rank's contiguous block of ``n`` items; ``n`` must divide evenly over the ranks."""
    size = world_size()
    if n % size:
        raise ValueError(f"batch size {n} does not divide over {size} processes; choose a multiple of {size}")
    per = n // size
    return slice(rank() * per, (rank() + 1) * per)


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (``value`` itself in a single process)."""
    if not active():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank, so that all ranks stop at the same step."""
    if not active():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj: object) -> list[object]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def over_blocks(fn: Callable[[list[Any]], Any], items: Sequence[Any]) -> list[Any]:
    """``fn`` applied by each rank to its contiguous block of ``items`` (sizes differ by at most one),
    the results gathered on every rank in rank order, empty blocks skipped; ``[fn(items)]`` in a
    single process. For work where each item's result depends on that item alone (a sample on its seed)."""
    n, size, r = len(items), world_size(), rank()
    bounds = [n * k // size for k in range(size + 1)]
    block = list(items[bounds[r]:bounds[r + 1]])
    return [part for part in gather(fn(block) if block else None) if part is not None]
