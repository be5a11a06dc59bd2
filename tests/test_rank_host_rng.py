"""NumPy's and Python's random states under DDP (issue 20): with 2 gloo processes, each rank
saves its own and a resume gives each rank back its own (before: every rank got rank 0's,
the only one state.json held); a checkpoint without per-rank states still loads rank 0's."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from gloo_ranks import on_two_ranks

import corediff
from corediff.engine import checkpoint
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def _recipe() -> corediff.Recipe:
    return corediff.load_recipe(ROOT / "recipes" / "quickstart.toml", overrides=[
        "data.image_size=8", "model.preset='tiny'", "train.batch_size=4", "run.device='cpu'"])


def _draws() -> tuple[list[float], list[float]]:
    return np.random.random(3).tolist(), [random.random() for _ in range(3)]


def _rank(rank: int, tmp: Path) -> tuple:
    recipe = _recipe()
    seed_everything(recipe.run.seed)
    trainer = Trainer(corediff.build(recipe), RunDir(tmp / "run"),
                      Context(torch.device("cpu"), rank, 2))
    np.random.seed(100 + rank)  # each rank's host streams differ (augmentations, user code)
    random.seed(200 + rank)
    state = trainer.state()
    expected = _draws()
    if rank == 0:
        checkpoint.save(tmp / "ckpt", model=trainer.model, ema=trainer.ema.module,
                        state=state, recipe_toml="")
    dist.barrier()
    np.random.seed(0)
    random.seed(0)
    trainer.load(tmp / "ckpt")
    return expected, _draws()


def test_each_rank_resumes_its_own_numpy_and_python_streams(tmp_path: Path) -> None:
    (expected0, got0), (expected1, got1) = on_two_ranks(_rank, tmp_path)
    assert expected0 != expected1
    assert got0 == expected0
    assert got1 == expected1, "rank 1 resumed rank 0's NumPy/Python streams"
    state = checkpoint.load_state(tmp_path / "ckpt")  # an old checkpoint: rank 0's for all
    for entry in state["ranks"]:
        entry.pop("numpy"), entry.pop("python")
    trainer = Trainer(corediff.build(_recipe()), RunDir(tmp_path / "one"),
                      Context(torch.device("cpu")))
    state["world_size"], state["ranks"] = 1, state["ranks"][:1]
    checkpoint.save(tmp_path / "old", model=trainer.model, ema=trainer.ema.module, state=state,
                    recipe_toml="")
    trainer.load(tmp_path / "old")
    assert _draws() == expected0
