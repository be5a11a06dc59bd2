"""SVD rank-truncation degradation and rank schedules against a per-sample reference: a Python
loop over images with torch.linalg.svd and an explicit U diag(S_masked) Vᵀ reconstruction."""

from __future__ import annotations

import pytest
import torch

from corediff_plugins.degradations.svd import SVDConfig, SVDDegradation
from corediff_plugins.schedules.rank_energy import RankEnergyConfig, RankEnergySchedule
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule


def reference_truncation(x: torch.Tensor, k: list[int]) -> torch.Tensor:
    """The notes' approach: per image, SVD then U diag(S[:k]) Vᵀ (float64)."""
    out = []
    for image, rank in zip(x.double(), k, strict=True):
        U, S, Vh = torch.linalg.svd(image, full_matrices=False)
        masked = torch.where(torch.arange(S.shape[-1]) < rank, S, 0.0)
        out.append(U @ torch.diag_embed(masked) @ Vh)
    return torch.stack(out).to(x.dtype)


def make(steps: int, min_rank: int = 0, noise_std: float = 0.0) -> SVDDegradation:
    schedule = RankLinearSchedule(RankLinearConfig(steps=steps))
    return SVDDegradation(SVDConfig(min_rank=min_rank, noise_std=noise_std), schedule=schedule)


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (3, 1, 12, 20), (5, 4, 20, 9), (1, 2, 8, 8)])
def test_degrade_matches_reference(shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator) * 2 - 1
    full_rank = min(shape[-2:])
    degradation = make(steps=full_rank)
    t = torch.randint(0, full_rank + 1, (shape[0],), generator=generator)
    t[0] = full_rank  # rank 0
    if shape[0] > 1:
        t[1] = 0  # full rank
    k = [full_rank - int(s) for s in t]  # linear schedule with T = rank: one value per step
    assert degradation.ranks(full_rank).tolist() == list(range(full_rank, -1, -1))
    out = degradation.degrade(x, t)
    torch.testing.assert_close(out, reference_truncation(x, k), atol=1e-5, rtol=0)
    assert torch.equal(out[t == 0], x[t == 0])
    assert torch.count_nonzero(out[t == full_rank]) == 0


def test_min_rank_and_respaced_linear_schedule():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 16, 24, generator=generator)
    degradation = make(steps=5, min_rank=4)
    t = torch.arange(6)
    k = [4 + round((1 - s / 5) * 12) for s in range(6)]
    assert degradation.ranks(16).tolist() == k
    torch.testing.assert_close(degradation.degrade(x, t), reference_truncation(x, k), atol=1e-5,
                               rtol=0)
    with pytest.raises(ValueError, match="min_rank"):
        make(steps=5, min_rank=17).degrade(x, t)


def test_cached_and_flipped_factors():
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 16, 12, generator=generator) * 2 - 1
    degradation = make(steps=12)
    t = torch.tensor([1, 5, 11, 12])
    factors = degradation.decompose(x)
    torch.testing.assert_close(degradation.degrade_from_factors(factors, t),
                               degradation.degrade(x, t), atol=1e-5, rtol=0)
    flipped = degradation.degrade_from_factors(degradation.flip_factors(factors), t)
    torch.testing.assert_close(flipped, degradation.degrade(x.flip(-1), t), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped, reference_truncation(x.flip(-1), [11, 7, 1, 0]),
                               atol=1e-5, rtol=0)


def test_degrade_many_uses_one_decomposition(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 10, 10, generator=generator)
    degradation = make(steps=10)
    s = torch.tensor([3, 7, 10])
    expected = [degradation.degrade(x, s), degradation.degrade(x, s - 1)]
    calls = []
    decompose = degradation.decompose
    monkeypatch.setattr(degradation, "decompose", lambda x0: calls.append(1) or decompose(x0))
    for got, want in zip(degradation.degrade_many(x, [s, s - 1]), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert len(calls) == 1


def test_error_curve_matches_reference():
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 10, 14, generator=generator) * 2 - 1
    curve = make(steps=10).error_curve(x)
    expected = torch.stack([(x - reference_truncation(x, [k] * 3)).abs().mean()
                            for k in range(11)]).double()
    torch.testing.assert_close(curve, expected, atol=1e-6, rtol=0)
    assert curve[-1] < 1e-6 and torch.isclose(curve[0], x.abs().mean().double())


def test_rank_energy_even_error_growth_and_state():
    generator = torch.Generator().manual_seed(5)
    # images with a decaying spectrum: smooth low-rank part plus small noise
    base = torch.randn(16, 3, 32, 4, generator=generator) @ torch.randn(16, 3, 4, 32,
                                                                        generator=generator)
    x = (base + 0.3 * torch.randn(16, 3, 32, 32, generator=generator)).tanh()
    schedule = RankEnergySchedule(RankEnergyConfig(steps=8))
    with pytest.raises(RuntimeError, match="not fitted"):
        schedule.values()
    schedule.fit(x)
    fraction = schedule.values()
    assert fraction[0] == 1 and fraction[-1] == 0 and (fraction.diff() <= 0).all()
    degradation = SVDDegradation(schedule=schedule)
    curve = degradation.error_curve(x)
    relative = curve / curve[0]
    ranks = degradation.ranks(32)
    target = torch.arange(9, dtype=torch.float64) / 8
    assert (relative[ranks] <= target + 1e-12).all()  # smallest rank reaching each target:
    assert (relative[(ranks - 1).clamp_min(0)][1:] > target[1:] - 1e-12).all()
    restored = RankEnergySchedule(RankEnergyConfig(steps=8))
    restored.load_extra_state(schedule.extra_state())
    assert torch.equal(restored.values(), fraction)


def test_stochastic_variant_noise_roundtrip():
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, 8, 8, generator=generator)
    degradation = make(steps=8, noise_std=0.5)
    assert "stochastic" in degradation.provides and "deterministic" not in degradation.provides
    noise = degradation.sample_noise(x, generator)
    t = torch.tensor([0, 2, 5, 8])
    x_t = degradation.degrade(x, t, noise)
    expected = reference_truncation(x, [8 - int(s) for s in t]) + 0.5 * (t / 8).view(-1, 1, 1,
                                                                                      1) * noise
    torch.testing.assert_close(x_t, expected, atol=1e-5, rtol=0)
    estimated = degradation.estimate_noise(x_t, x, t)
    torch.testing.assert_close(estimated[1:], noise[1:], atol=1e-4, rtol=0)
    assert make(steps=8).sample_noise(x) is None


def test_preview_strip_and_error_table(tmp_path):
    from PIL import Image

    from corediff.degrade_preview import degradation_strip, save_strip, svd_error_table

    generator = torch.Generator().manual_seed(7)
    image = torch.rand(3, 8, 10, generator=generator) * 2 - 1
    degradation = make(steps=8)
    strip = degradation_strip(degradation, image, n=5)  # t = 0, 2, 4, 6, 8
    assert strip.shape == (3, 8, 50)
    torch.testing.assert_close(strip[..., :10], image)
    expected = reference_truncation(image[None], [4])[0].clamp(-1, 1)  # the strip is clamped
    torch.testing.assert_close(strip[..., 20:30], expected, atol=1e-5, rtol=0)
    assert torch.count_nonzero(strip[..., 40:]) == 0
    path = save_strip(degradation, image, tmp_path / "strip.png", n=5)
    assert Image.open(path).size == (50, 8)
    table = svd_error_table(degradation, image)
    assert [k for k, _ in table] == list(range(9))
    assert table[0][1] == pytest.approx(image.abs().mean().item(), rel=1e-6)
    blur = type("NoCurve", (), {})()
    assert svd_error_table(blur, image) is None
