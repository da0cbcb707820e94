"""The process group ``torchrun`` describes, and the few collectives the library needs.

:func:`init_distributed` joins the group described by ``torchrun``'s environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on the CPU, NCCL on GPUs.
Without those variables it does nothing and the process is rank 0 of 1, so the same code runs alone
or under ``torchrun --nproc-per-node N``. :func:`rank`, :func:`world_size`, :func:`barrier` and
:func:`all_reduce_sum` work in both cases.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .device import DEFAULT_DEVICE, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process job (``torchrun`` sets these variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str | torch.device = DEFAULT_DEVICE, *, timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Join ``torchrun``'s process group (if there is one) and pick this process's device.

    Returns the context (rank, world size, local rank, backend) and the device; a process started
    without ``torchrun`` gets rank 0 of 1 and no group. Calling it again returns the same answer.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend()), dev
    if not launched_by_torchrun():
        return DistContext(), dev
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process without torchrun")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"{var} is not set: start the processes with torchrun (e.g. torchrun --nproc-per-node 2 ...)")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                            device_id=dev if dev.type == "cuda" else None)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    log.info("rank %d of %d (%s, %s)", ctx.rank, ctx.world_size, backend, dev)
    return ctx, dev


def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every process of the group (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all processes (``t`` itself in a single process); in place."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` has it, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    """Leave the process group (if any); safe to call twice.

    On a normal exit, a barrier first, so that no rank tears its group down while another still
    has a collective in flight with it: without one, a rank that left early once made gloo abort
    the other at exit ("terminate called without an active exception", SIGABRT after both had
    written their results), in a 2-rank test on a loaded 2-core machine. Not while an exception is
    propagating (called from a ``finally``): the other ranks may be inside a different collective,
    and a barrier would then wait for them until the group's timeout."""
    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[0] is None:
            try:
                dist.barrier()
            except Exception:  # a peer already gone: leave anyway, the caller is exiting
                pass
        dist.destroy_process_group()
