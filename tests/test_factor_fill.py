"""Factors once per dataset under DDP (issue 20): with 2 gloo processes each rank decomposes
half of the images (:meth:`FactorCache.fill`), and both end with every image's factors, the
same bits as one process that decomposed them all while training (lazily, in
:meth:`FactorCache.degrade`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from gloo_ranks import on_two_ranks

import corediff
from corediff.engine.factor_cache import FactorCache

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 150  # the first 150 digits: 3 rounds of 2 ranks x 32, the last one partial


def _pipeline():
    recipe = corediff.load_recipe(ROOT / "studies" / "recipes" / "svd_digits16.toml",
                                  overrides=["data.split='test'", "model.preset='tiny'"])
    return corediff.build(recipe)


def _digest(cache: FactorCache) -> str:
    digest = hashlib.sha256()
    for part in [*cache.parts, cache.fingerprints]:
        digest.update(part.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _rank(rank: int, tmp: Path) -> tuple[int, bool, str]:
    pipeline = _pipeline()
    cache = FactorCache(pipeline.degradation, len(pipeline.dataset), capacity=IMAGES,
                        dtype=torch.float16)
    cache.fill(pipeline.dataset, rank, 2, batch=32)
    return cache.decomposed, bool(cache.filled.all()), _digest(cache)


def test_two_ranks_each_decompose_half_and_end_alike(tmp_path: Path) -> None:
    (count0, full0, digest0), (count1, full1, digest1) = on_two_ranks(_rank, tmp_path)
    assert (count0, count1) == (32 + 32 + 22, 32 + 32)  # rounds of 64: 0-63, 64-127, 128-149
    assert full0 and full1 and digest0 == digest1
    pipeline = _pipeline()  # one process, lazily, in training-sized batches
    images = torch.stack([pipeline.dataset[i][0] for i in range(64)])
    for component in pipeline.components().values():
        component.fit(images)
    lazy = FactorCache(pipeline.degradation, len(pipeline.dataset), capacity=IMAGES,
                       dtype=torch.float16)
    for first in range(0, IMAGES, 8):
        index = torch.arange(first, min(first + 8, IMAGES))
        x0 = torch.stack([pipeline.dataset[int(i)][0] for i in index])
        lazy.degrade(x0, index, torch.ones(len(index), dtype=torch.long))
    assert lazy.decomposed == IMAGES and _digest(lazy) == digest0


def _train_rank(rank: int, tmp: Path) -> tuple[int, int, str]:
    from corediff.engine.distributed import Context
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import Trainer, seed_everything

    recipe = corediff.load_recipe(ROOT / "studies" / "recipes" / "svd_digits16.toml", overrides=[
        "data.split='test'", "model.preset='tiny'", "train.steps=1", "train.batch_size=8",
        "train.num_workers=0", "run.device='cpu'"])
    seed_everything(recipe.run.seed)
    trainer = Trainer(corediff.build(recipe), RunDir(tmp / "run"),
                      Context(torch.device("cpu"), rank, 2))
    trainer.fit_components()
    trainer.train()
    cache = trainer.factor_cache
    return cache.decomposed, cache.capacity, _digest(cache)


def test_ddp_training_fills_the_cache_once_across_ranks(tmp_path: Path) -> None:
    """Trainer.train under 2 gloo ranks: each rank decomposed its share of the dataset
    before the first step, none again in it (before: each rank decomposed its batches'
    images, and in time the whole dataset)."""
    (tmp_path / "run").mkdir()
    (count0, size, digest0), (count1, _, digest1) = on_two_ranks(_train_rank, tmp_path)
    assert count0 + count1 == size and abs(count0 - count1) <= 64 and digest0 == digest1
