"""FactorCache (decompose each training image once) against the degradation's own degrade."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from corediff.cli import main
from corediff.engine import factor_cache
from corediff.engine.factor_cache import FactorCache, canonical
from corediff.engine.rundir import read_metrics
from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.degradations.svd import SVDConfig, SVDDegradation
from corediff_plugins.schedules.cosine import CosineSchedule
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def make(noise_std: float = 0.0, steps: int = 12) -> SVDDegradation:
    schedule = RankLinearSchedule(RankLinearConfig(steps=steps))
    return SVDDegradation(SVDConfig(noise_std=noise_std), schedule=schedule)


def count_rows(monkeypatch, degradation) -> list[int]:
    """Wrap ``decompose``: the list gets each call's number of images."""
    calls: list[int] = []
    decompose = degradation.decompose
    monkeypatch.setattr(degradation, "decompose", lambda x: calls.append(len(x)) or decompose(x))
    return calls


def test_protocol_is_duck_typed():
    assert FactorCache.supports(make())
    assert not FactorCache.supports(GaussianDegradation(schedule=CosineSchedule()))


def test_canonical_is_shared_by_an_image_and_its_mirror():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 10, generator=generator)
    x[1] = x[1].flip(-1) + x[1]  # left-right symmetric: never marked mirrored
    canon, flip = canonical(x)
    canon_m, flip_m = canonical(x.flip(-1))
    assert torch.equal(canon, canon_m)
    assert not flip[1] and not flip_m[1]
    others = torch.tensor([0, 2, 3, 4, 5])
    assert torch.equal(flip[others], ~flip_m[others])
    assert torch.equal(torch.where(flip[:, None, None, None], x.flip(-1), x), canon)


@pytest.mark.parametrize("noise_std", [0.0, 0.1])
def test_degrade_matches_the_degradation(monkeypatch, noise_std):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 12, 12, generator=generator) * 2 - 1
    degradation, reference = make(noise_std), make(noise_std)
    cache = FactorCache(degradation, size=len(images))
    calls = count_rows(monkeypatch, degradation)

    def check(index: list[int], x0: torch.Tensor) -> torch.Tensor:
        t = torch.randint(0, 13, (len(index),), generator=generator)
        noise = degradation.sample_noise(x0, generator)
        out = cache.degrade(x0, torch.tensor(index), t, noise)
        torch.testing.assert_close(out, reference.degrade(x0, t, noise), atol=1e-5, rtol=0)
        assert torch.equal(out[t == 0], x0[t == 0])
        return out

    # repeated indices, one of them mirrored, in the very first (cold) batch
    first = [0, 1, 1, 2, 0]
    check(first, torch.stack([images[0], images[1], images[1].flip(-1), images[2],
                              images[0]]))
    assert calls == [5] and cache.filled.tolist() == [True, True, True, False, False]
    # image_folder-style random hflip, an unseen index and an altered image (not stored)
    altered = images[2] + 0.5
    batch = [images[0].flip(-1), images[1], altered, images[3], images[2].flip(-1)]
    check([0, 1, 2, 3, 2], torch.stack(batch))
    assert calls == [5, 2]  # the altered row and index 3
    assert torch.equal(cache.images[2], canonical(images[2][None])[0][0])
    assert cache.filled.tolist() == [True, True, True, True, False]
    # everything cached: no decomposition at all
    check([3, 1, 0, 2], torch.stack([images[3].flip(-1), images[1].flip(-1), images[0],
                                     images[2]]))
    assert calls == [5, 2]


def test_cold_and_warm_cache_give_identical_bits():
    """The cache is derived state: a resumed run (cold cache, other orientations first)
    degrades exactly like the uninterrupted one."""
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 16, 16, generator=generator) * 2 - 1
    degradation = make(steps=16)
    warm = FactorCache(degradation, size=4)
    warm.degrade(images.flip(-1), torch.arange(4), torch.ones(4, dtype=torch.long))
    x0 = torch.stack([images[2], images[0].flip(-1), images[3], images[1]])
    index, t = torch.tensor([2, 0, 3, 1]), torch.tensor([1, 5, 9, 16])
    cold = FactorCache(degradation, size=4).degrade(x0, index, t)
    assert torch.equal(warm.degrade(x0, index, t), cold)
    # one image at a time (another batch composition) gives the same bits too
    single = FactorCache(degradation, size=4)
    rows = [single.degrade(x0[i:i + 1], index[i:i + 1], t[i:i + 1]) for i in range(4)]
    assert torch.equal(torch.cat(rows), cold)


def test_each_index_is_decomposed_once_over_two_epochs(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(10, 3, 8, 8, generator=generator) * 2 - 1
    degradation, reference = make(steps=8), make(steps=8)
    cache = FactorCache(degradation, size=len(images))
    calls = count_rows(monkeypatch, degradation)
    for _epoch in range(2):
        order = torch.randperm(len(images), generator=generator)
        for index in order.split(4):
            flip = torch.rand(len(index), generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index])
            t = torch.randint(1, 9, (len(index),), generator=generator)
            torch.testing.assert_close(cache.degrade(x0, index, t), reference.degrade(x0, t),
                                       atol=1e-5, rtol=0)
    assert calls == [4, 4, 2]  # the first epoch's three batches, nothing in the second
    assert cache.decomposed == len(images) and bool(cache.filled.all())


def test_svd_training_decomposes_each_image_once(tmp_path, monkeypatch):
    from corediff_plugins.datasets.sample_patches import write_sample_folder

    root = tmp_path / "images"
    write_sample_folder(root, count=8, size=20)
    caches: list[FactorCache] = []
    init = FactorCache.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        caches.append(self)

    monkeypatch.setattr(factor_cache.FactorCache, "__init__", record)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        overrides = [
            f"data.root='{root}'", "data.image_size=16", "model.preset='tiny'",
            "model.attention_resolutions=[]", "diffusion.schedule.steps=16",
            "diffusion.sampler.steps=4", "diffusion.prior.bank_size=8", "train.steps=6",
            "train.batch_size=4", "train.checkpoint_every=6", "train.log_every=2",
            "train.sample_every=0", "train.warmup_steps=2", "train.num_workers=0",
            "train.precision='fp32'", "run.device='cpu'",
        ]
        code = main(["train", str(RECIPES / "svd_afhq.toml"), "--run-dir", str(tmp_path / "r"),
                     *[arg for item in overrides for arg in ("--set", item)]])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    rows = read_metrics(tmp_path / "r" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    (cache,) = caches
    # 6 steps of 4 = three epochs of 8 mirrored-at-random images: each decomposed once
    assert cache.decomposed == 8 and bool(cache.filled.all())
