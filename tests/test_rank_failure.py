"""One rank's failure ends every rank promptly (issue 20), checked with 2 gloo processes on
this CPU. A rank that fails stays alive afterwards, as under NCCL (where the others would
not notice it leave and wait for the 10-minute timeout): before the shared failure flag,
its peer waited in a collective until this test's bound; now both raise within seconds,
the peer naming the failed rank and its message. And ``train.collective_timeout_s``
reaches ``init_process_group``."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import corediff
from corediff.engine import checkpoint, distributed
from corediff.engine.distributed import Context
from corediff.engine.factor_cache import FactorCache
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import run_training

ROOT = Path(__file__).resolve().parents[1]
BOUND_S = 60  # the parent gives up (old code: a rank still waiting) after this long
SETTINGS = [
    "data.image_size=8", "model.preset='tiny'", "train.batch_size=2", "train.steps=4",
    "train.checkpoint_every=2", "train.log_every=1", "train.num_workers=0",
    "run.device='cpu'", "diffusion.schedule={type='rank_energy', steps=8}",
]


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _inject(where: str, rank: int) -> None:
    """Make this rank fail where the case says (the others run normally)."""
    def broken_check(self):
        raise corediff.errors.TrainingError("factor cache: injected failure")

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device (injected)")

    if where == "factor_cache" and rank == 1:
        FactorCache.check = broken_check
    if where == "write" and rank == 0:
        checkpoint.save = broken_save


def _rank(rank: int, tmp: str, where: str, results, done) -> None:
    """One gloo process: train with the case's failure injected; stay alive after failing
    (up to 2·BOUND_S, until every rank is done) so a waiting peer cannot notice it leave."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2,
                            timeout=timedelta(seconds=10 * BOUND_S))
    start = time.perf_counter()
    try:
        _inject(where, rank)
        recipe = corediff.load_recipe(ROOT / "recipes" / "svd_afhq.toml",
                                      overrides=[*SETTINGS, f"data.root='{tmp}/images'"])
        run_training(recipe, RunDir(Path(tmp) / "run"), Context(torch.device("cpu"), rank, 2),
                     resume=False)
        results[rank] = ("finished", "", time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the test records what each rank raised
        results[rank] = (type(exc).__name__, str(exc), time.perf_counter() - start)
    done[rank] = True
    deadline = time.perf_counter() + 2 * BOUND_S
    while len(done) < 2 and time.perf_counter() < deadline:
        time.sleep(0.1)
    dist.destroy_process_group()


@pytest.mark.parametrize("where, failed, message", [
    ("factor_cache", 1, "factor cache: injected failure"),
    ("write", 0, "No space left on device"),
])
def test_a_failure_on_one_rank_ends_every_rank(tmp_path, where, failed, message):
    _folder(tmp_path / "images")
    method = "spawn" if sys.platform == "darwin" else "fork"
    with mp.Manager() as manager:
        results, done = manager.dict(), manager.dict()
        context = mp.start_processes(_rank, args=(str(tmp_path), where, results, done),
                                     nprocs=2, join=False, start_method=method)
        deadline = time.perf_counter() + BOUND_S
        while len(done) < 2 and time.perf_counter() < deadline:
            time.sleep(0.2)
        finished = dict(results)
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    assert set(finished) == {0, 1}, f"a rank was still waiting after {BOUND_S} s: {finished}"
    other = 1 - failed
    assert message in finished[failed][1], finished
    assert finished[other][0] == "TrainingError", finished
    assert f"rank {failed} of 2 failed" in finished[other][1] and message in finished[other][1]
    assert abs(finished[0][2] - finished[1][2]) < 10, finished  # within seconds of each other


def test_collective_timeout_reaches_the_process_group(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, timeout=None: seen.update(backend=backend, timeout=timeout))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    recipe = corediff.load_recipe(ROOT / "recipes" / "svd_afhq.toml",
                                  overrides=["train.collective_timeout_s=42"])
    context = distributed.setup("cpu", recipe.train.collective_timeout_s)
    assert seen == {"backend": "gloo", "timeout": timedelta(seconds=42)}
    assert (context.rank, context.world_size) == (1, 2)
