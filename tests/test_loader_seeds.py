"""Loader workers and random augmentations (issue 20): each item's crop is seeded from (run
seed, rank, epoch, index), so persistent workers follow the epochs, a resume mid-run ends on
the uninterrupted run's weights byte for byte, the worker count changes nothing and ranks
draw different crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import corediff
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer, _Indexed, run_training

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "data.image_size=8", "data.crop='random'", "model.preset='tiny'", "train.batch_size=2",
    "train.steps=6", "train.checkpoint_every=2", "train.log_every=2", "train.num_workers=2",
    "run.device='cpu'", "diffusion.schedule={type='rank_energy', steps=8}",
]


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _recipe(folder: Path, *extra: str):
    return corediff.load_recipe(ROOT / "recipes" / "svd_afhq.toml",
                                overrides=[*SETTINGS, f"data.root='{folder}'", *extra])


def _weights(trainer: Trainer) -> bytes:
    return b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())


def test_resume_mid_run_with_persistent_workers_matches_uninterrupted(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")  # 8 images, 4 batches an epoch: steps 1..6
    whole = run_training(_recipe(folder), RunDir(tmp_path / "whole"), _cpu(), resume=False)

    step = Trainer.train_step

    def stop_after_2(self, data):
        if self.step == 3:  # step 3 was taken and 'last' holds step 2: the job dies here
            raise KeyboardInterrupt
        return step(self, data)

    monkeypatch.setattr(Trainer, "train_step", stop_after_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(_recipe(folder), RunDir(tmp_path / "parts"), _cpu(), resume=False)
    monkeypatch.setattr(Trainer, "train_step", step)
    parts = run_training(_recipe(folder), RunDir(tmp_path / "parts"), _cpu(), resume=True)
    assert parts.step == whole.step == 6
    assert _weights(parts) == _weights(whole)  # before: persistent workers' crops differed


def _cpu():
    from corediff.engine.distributed import Context
    return Context(torch.device("cpu"))


def _crops(dataset, rank: int, epoch: int, workers: int) -> torch.Tensor:
    indexed = _Indexed(dataset, seed=0, rank=rank)
    keys = [(epoch, index) for index in range(len(dataset))]
    loader = DataLoader(indexed, batch_size=2, sampler=keys, num_workers=workers)
    return torch.cat([x0 for _, x0, _ in loader])


def test_crops_follow_seed_rank_epoch_index_not_workers(tmp_path):
    dataset = corediff.build(_recipe(_folder(tmp_path / "images"))).dataset
    crops = _crops(dataset, rank=0, epoch=0, workers=0)
    assert torch.equal(crops, _crops(dataset, rank=0, epoch=0, workers=2))  # any worker count
    assert not torch.equal(crops, _crops(dataset, rank=1, epoch=0, workers=2))  # own per rank
    assert not torch.equal(crops, _crops(dataset, rank=0, epoch=1, workers=2))  # own per epoch
    before = torch.get_rng_state()
    _Indexed(dataset, seed=0)[3]
    assert torch.equal(before, torch.get_rng_state())  # the caller's stream is untouched
