"""The training-time sample grid under DDP (issue 20): every rank samples its share of the
batches and rank 0 writes the grid one process writes (before, rank 0 sampled it alone while
the others waited); checked with 2 gloo processes."""

from __future__ import annotations

from pathlib import Path

import torch
from gloo_ranks import on_two_ranks

import corediff
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def _trainer(run: Path, context: Context, n: int = 10, batch_size: int = 3) -> Trainer:
    recipe = corediff.load_recipe(ROOT / "recipes" / "quickstart.toml", overrides=[
        "data.image_size=8", "model.preset='tiny'", "train.batch_size=4", "run.device='cpu'",
        f"sample.n={n}", f"sample.batch_size={batch_size}", "diffusion.sampler.steps=4"])
    seed_everything(recipe.run.seed)
    trainer = Trainer(corediff.build(recipe), RunDir(run), context)
    trainer.fit_components()
    return trainer


def _calls(trainer: Trainer) -> list[int]:
    """A list that counts the sampling network's evaluations (EMA weights)."""
    calls: list[int] = []
    trainer.ema.module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def _rank(rank: int, tmp: Path, n: int = 10, batch_size: int = 3) -> tuple[int, bytes | None]:
    trainer = _trainer(tmp / "run", Context(torch.device("cpu"), rank, 2), n, batch_size)
    calls = _calls(trainer)
    trainer.sample_grid(tmp / f"grid{rank}.png", across=True)
    grid = tmp / f"grid{rank}.png"
    return len(calls), grid.read_bytes() if grid.exists() else None


def test_ranks_share_the_grid_and_rank_0_writes_the_one_process_grid(tmp_path: Path) -> None:
    (calls0, grid0), (calls1, grid1) = on_two_ranks(_rank, tmp_path)
    single = _trainer(tmp_path / "single", Context(torch.device("cpu")))
    calls = _calls(single)
    single.sample_grid(tmp_path / "single.png")
    assert grid1 is None and grid0 == (tmp_path / "single.png").read_bytes()
    assert calls0 == calls1 == len(calls) // 2 > 0  # batches 0, 2 and 1, 3 of 10 in 3s


def _rank_one_batch(rank: int, tmp: Path) -> tuple[int, bytes | None]:
    return _rank(rank, tmp, n=4, batch_size=64)


def test_a_grid_that_fits_one_batch_is_still_shared(tmp_path: Path) -> None:
    """n = 4 with batches of 64: each of 2 ranks samples 2 images (4 steps each), and the grid
    is the one process's grid in batches of ⌈4 / 2⌉ = 2."""
    (calls0, grid0), (calls1, grid1) = on_two_ranks(_rank_one_batch, tmp_path)
    single = _trainer(tmp_path / "single", Context(torch.device("cpu")), n=4, batch_size=2)
    calls = _calls(single)
    single.sample_grid(tmp_path / "single.png")
    assert grid1 is None and grid0 == (tmp_path / "single.png").read_bytes()
    assert calls0 == calls1 == len(calls) // 2 == 4
