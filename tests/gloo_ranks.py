"""Two gloo processes for the DDP tests that run on this CPU: :func:`on_two_ranks`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _main(rank: int, folder: str, results: Any, body: Callable[[int, Path], Any]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2)
    try:
        results[rank] = body(rank, Path(folder))
    finally:
        dist.destroy_process_group()


def on_two_ranks(body: Callable[[int, Path], Any], folder: Path) -> list[Any]:
    """``body(rank, folder)`` in 2 processes joined in a gloo process group (a module-level
    function: it is sent to the processes); what each returned, in rank order."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_main, args=(str(folder), results, body), nprocs=2, join=True,
                           start_method="spawn" if sys.platform == "darwin" else "fork")
        return [results[0], results[1]]
