"""Devices and torch.distributed set-up for runs launched by ``torchrun``.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; a plain ``corediff train`` has none and
runs as the single process rank 0 of 1. Backends: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from corediff.errors import ConfigError, TrainingError


@dataclass(frozen=True)
class Context:
    """Where this process runs and which share of the work is its own."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files (run directory, checkpoints, metrics, samples)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'auto' and 'cuda' mean cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"[run] device: '{name}' is not a device (use auto, cpu, cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"[run] device: '{name}' asked for, but CUDA is not available")
    return device


def setup(device_name: str, timeout_s: float | None = None) -> Context:
    """Join the process group when launched by torchrun; pick this process's device.
    ``timeout_s`` bounds every collective (``train.collective_timeout_s``): a rank that
    failed outside the agreed boundaries (:func:`shared_failure`) leaves the others waiting
    that long at most, not NCCL's default of 10 minutes or gloo's 30."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(resolve_device(device_name))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = None if timeout_s is None else timedelta(seconds=timeout_s)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Context(device, dist.get_rank(), dist.get_world_size())


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(values: torch.Tensor, context: Context) -> torch.Tensor:
    """The mean of ``values`` over every process (itself when not distributed)."""
    if context.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= context.world_size
    return values


def any_across(flag: bool, context: Context) -> bool:
    """True when ``flag`` is true on any process (itself when not distributed)."""
    if not context.distributed:
        return flag
    value = torch.tensor([float(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def gather(value: object, context: Context) -> list[object]:
    """Every process's ``value`` (small picklable state), in rank order, on every process."""
    if not context.distributed:
        return [value]
    values: list[object] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def agree(error: BaseException | None, context: Context) -> None:
    """Every rank meets here (a barrier carrying failures): the rank that brings ``error``
    raises it, and every other rank raises a TrainingError naming the first failed rank and
    its message, so one rank's failure ends them all at once instead of at a timeout."""
    if not context.distributed:
        if error is not None:
            raise error
        return
    message = None if error is None else f"{type(error).__name__}: {error}"
    messages = gather(message, context)
    if error is not None:
        raise error
    for rank, text in enumerate(messages):
        if text is not None:
            raise TrainingError(f"rank {rank} of {context.world_size} failed, so rank "
                                f"{context.rank} stops too: {text}")


@contextlib.contextmanager
def shared_failure(context: Context) -> Iterator[None]:
    """A block only some ranks may fail in (rank 0's writes, a rank's own checks), ended by
    :func:`agree`: every rank meets at its end and an exception on any rank is raised on
    every rank. The block must call no collective itself."""
    try:
        yield
    except Exception as exc:
        agree(exc, context)
        raise
    agree(None, context)
