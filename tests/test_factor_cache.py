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
from corediff.errors import TrainingError
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
        # the cache decomposes the canonical (maybe mirrored) image: float32 SVDs of an image
        # and of its mirror agree to ~1e-5
        torch.testing.assert_close(out, reference.degrade(x0, t, noise), atol=5e-5, rtol=0)
        assert torch.equal(out[t == 0], x0[t == 0])
        return out

    # repeated indices, one of them mirrored, in the very first (cold) batch
    first = [0, 1, 1, 2, 0]
    check(first, torch.stack([images[0], images[1], images[1].flip(-1), images[2],
                              images[0]]))
    assert calls == [5] and cache.filled.tolist() == [True, True, True, False, False]
    # image_folder-style random hflip and an unseen index
    batch = [images[0].flip(-1), images[1], images[3], images[2].flip(-1)]
    check([0, 1, 3, 2], torch.stack(batch))
    assert calls == [5, 1]  # index 3 only
    assert cache.filled.tolist() == [True, True, True, True, False]
    # everything cached: no decomposition at all
    check([3, 1, 0, 2], torch.stack([images[3].flip(-1), images[1].flip(-1), images[0],
                                     images[2]]))
    assert calls == [5, 1]
    cache.check()  # every stored image came back as it was


def test_a_changed_item_is_caught_at_the_next_check():
    """A dataset that declares fixed items but changes one (a random crop) is refused when
    the trainer next checks, at a checkpoint: the cache never syncs in the step."""
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 8, 8, generator=generator) * 2 - 1
    cache = FactorCache(make(), size=3)
    ones = torch.ones(3, dtype=torch.long)
    cache.degrade(images, torch.arange(3), ones)
    cache.degrade(images.flip(-1), torch.arange(3), ones)
    cache.check()
    cache.degrade(images + 0.25, torch.arange(3), ones)
    with pytest.raises(TrainingError, match="changed between epochs"):
        cache.check()


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


def _epochs(cache: FactorCache, images: torch.Tensor, seed: int, epochs: int = 2):
    """Degrade ``images`` in random order, mirrored at random, for ``epochs`` epochs; yields
    (x0, t, result)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(images), generator=generator).split(3):
            flip = torch.rand(len(index), generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index])
            t = torch.randint(0, 9, (len(index),), generator=generator)
            yield x0, t, cache.degrade(x0, index, t)


@pytest.mark.parametrize("placement", ["device", "host"])
def test_bounded_capacity_serves_every_image_exactly(placement, monkeypatch):
    """Images beyond the capacity are decomposed at every step; the results are the same as
    an unbounded cache's, bit for bit, and the storage holds only ``capacity`` images."""
    images = torch.rand(8, 3, 10, 12, generator=torch.Generator().manual_seed(6)) * 2 - 1
    full = FactorCache(make(steps=8), size=8)
    bounded_svd = make(steps=8)
    calls = count_rows(monkeypatch, bounded_svd)
    bounded = FactorCache(bounded_svd, size=8, capacity=3, placement=placement)
    unbounded, limited = _epochs(full, images, 7), _epochs(bounded, images, 7)
    for (_, _, expected), (_, _, got) in zip(unbounded, limited, strict=True):
        assert torch.equal(got, expected)
    assert bounded.filled.tolist() == [True] * 3
    per_image = factor_cache.bytes_per_image(make(steps=8), (3, 10, 12), torch.float32)
    assert bounded.nbytes == 3 * per_image
    assert sum(calls) == 3 + 2 * 5  # indices 0..2 once, 3..7 in both epochs


def test_float16_factors_stay_within_1e3_and_resume_exactly():
    """float16 storage halves the cache; on uniform random images in [-1, 1] (a full
    spectrum, the worst case) the reconstruction's RMS error is 2.1e-4 and its maximum
    1.1e-3 at 32 to 128 px, every rank (bfloat16, RMS 1.6e-3, is not offered); a cold cache
    still equals a warm one."""
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(8)) * 2 - 1
    svd = make(steps=16)
    half = FactorCache(svd, size=6, dtype=torch.float16)
    for t in range(0, 17, 4):
        steps = torch.full((6,), t)
        error = (half.degrade(images, torch.arange(6), steps) - svd.degrade(images, steps)).abs()
        assert error.pow(2).mean().sqrt() < 3e-4 and error.max() < 1.5e-3, (t, error.max())
    cold = FactorCache(svd, size=6, dtype=torch.float16)
    t = torch.tensor([1, 3, 5, 7, 9, 16])
    assert torch.equal(cold.degrade(images.flip(-1), torch.arange(6), t),
                       half.degrade(images.flip(-1), torch.arange(6), t))
    full = FactorCache(svd, size=6)
    full.degrade(images, torch.arange(6), t)
    assert half.nbytes < 0.51 * full.nbytes + 6 * 8


def test_plan_chooses_a_placement_within_the_budget():
    """AFHQ-sized plans: 14,630 images of 3×512×512 need ~88 GiB of float32 factors."""
    per_image = factor_cache.bytes_per_image(make(), (3, 512, 512), torch.float32)
    assert per_image == 4 * 3 * (512 * 512 * 2 + 512) + 8
    plan = factor_cache.plan("auto", images=14_630, per_image=per_image, device_gib=4,
                             host_gib=16)
    assert plan.placement == "host" and plan.capacity == int(16 * 2**30 // per_image)
    assert "host memory" in plan.notice and "decomposed at every step" in plan.notice
    small = factor_cache.plan("auto", images=1000, per_image=100_000, device_gib=4, host_gib=1)
    assert small.placement == "device" and small.capacity == 1000
    assert factor_cache.plan("off", images=10, per_image=10, device_gib=1, host_gib=1
                             ).placement is None
    none = factor_cache.plan("device", images=10, per_image=2**31, device_gib=1, host_gib=1)
    assert none.placement is None and "exceed" in none.notice


def test_512px_images_stay_within_the_stated_budget():
    """Real 512×512 images through the cache under a 40 MiB host budget: the storage never
    exceeds it, and every image is still degraded exactly."""
    images = torch.rand(10, 3, 512, 512, generator=torch.Generator().manual_seed(9)) * 2 - 1
    svd = make(steps=8)
    per_image = factor_cache.bytes_per_image(svd, (3, 512, 512), torch.float32)
    budget = 40 / 1024
    plan = factor_cache.plan("auto", images=10, per_image=per_image, device_gib=0.01,
                             host_gib=budget)
    assert plan.placement == "host" and plan.capacity == 6
    cache = FactorCache(svd, size=10, capacity=plan.capacity, placement="host")
    t = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 0, 4])
    for order in (torch.arange(10), torch.arange(10).flip(0)):
        got = cache.degrade(images[order], order, t)
        torch.testing.assert_close(got, svd.degrade(images[order], t), atol=1e-4, rtol=0)
        assert cache.nbytes <= budget * 2**30
