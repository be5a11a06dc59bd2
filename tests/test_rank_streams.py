"""Random streams under DDP, checked on this CPU (issue 20): validation never reseeds a CUDA
generator; with 2 gloo processes, every rank fits the same data-fitted curves (random crops
drawn before the per-rank reseed) and a resume gives each rank back its own CUDA generator
state (CUDA's RNG functions are stand-ins recording what they are given)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import corediff
from corediff.engine import checkpoint
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "data.image_size=8", "data.crop='random'", "model.preset='tiny'", "train.batch_size=4",
    "train.num_workers=0", "train.val_fraction=0.25", "run.device='cpu'",
    "diffusion.schedule={type='rank_energy', steps=8}", "diffusion.prior={type='partial', "
    "start=0.7}",
]


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _trainer(folder: Path, run: Path, context: Context) -> Trainer:
    recipe = corediff.load_recipe(ROOT / "recipes" / "svd_afhq.toml",
                                  overrides=[*SETTINGS, f"data.root='{folder}'"])
    seed_everything(recipe.run.seed)
    return Trainer(corediff.build(recipe), RunDir(run), context)


def test_validation_does_not_reseed_cuda(tmp_path, monkeypatch):
    trainer = _trainer(_folder(tmp_path / "images"), tmp_path / "run",
                       Context(torch.device("cpu")))
    trainer.fit_components()
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append(seed))
    before = torch.get_rng_state()
    trainer.validation_loss()
    assert seeded == []  # torch.manual_seed in validation would reseed every CUDA generator
    assert torch.equal(before, torch.get_rng_state())


class _FakeCudaRng:
    """CUDA's generator-state functions for a process that has no GPU: rank r's state is
    bytes of value r + 1; what set_rng_state receives is recorded."""

    def __init__(self, rank: int) -> None:
        self.rank, self.restored = rank, []

    def install(self) -> None:
        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: 2
        torch.cuda.current_device = lambda: self.rank
        torch.cuda.get_rng_state = lambda device=None: torch.full((8,), self.rank + 1,
                                                                    dtype=torch.uint8)
        torch.cuda.get_rng_state_all = lambda: [torch.cuda.get_rng_state(i) for i in range(2)]
        torch.cuda.set_rng_state = lambda state, device=None: self.restored.append(
            (int(state[0]), device))


def _rank(rank: int, tmp: str, results) -> None:
    """One of 2 gloo processes: fit, save (rank 0 writes), resume with fake CUDA RNG."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    try:
        context = Context(torch.device("cpu"), rank, 2)
        folder, run = Path(tmp) / "images", Path(tmp) / "run"
        trainer = _trainer(folder, run, context)
        trainer.fit_components()
        curve = trainer.pipeline.schedule.extra_state()["error_curve"]
        fake = _FakeCudaRng(rank)
        real = {name: getattr(torch.cuda, name) for name in (
            "is_available", "device_count", "current_device", "get_rng_state",
            "get_rng_state_all", "set_rng_state")}
        fake.install()
        try:
            trainer.step = 1
            state = trainer.state()
            if rank == 0:
                checkpoint.save(run / "ckpt", model=trainer.model, ema=trainer.ema.module,
                                state=state, recipe_toml="")
            dist.barrier()
            trainer.load(run / "ckpt")
        finally:
            for name, value in real.items():
                setattr(torch.cuda, name, value)
        results[rank] = (curve.tolist(), fake.restored)
    finally:
        dist.destroy_process_group()


def test_ranks_fit_alike_and_resume_their_own_cuda_stream(tmp_path):
    _folder(tmp_path / "images")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_rank, args=(str(tmp_path), results), nprocs=2, join=True,
                           start_method="spawn" if sys.platform == "darwin" else "fork")
        (curve0, restored0), (curve1, restored1) = results[0], results[1]
    assert curve0 == curve1, "ranks fitted different rank_energy curves"
    assert restored0 == [(1, 0)], restored0  # rank 0: its own state, its own device
    assert restored1 == [(2, 1)], restored1  # before: rank 0's states, on every device


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pytest.main([__file__, "-q"])
