"""Blur degradation against Cold Diffusion's iterative blur (reference code ``get_kernels`` and
``sample``: kernel i is a sampled Gaussian, normalised, ``kernel_size`` taps, applied by a
depthwise Conv2d with 'reflect' or 'circular' padding; D(x0, t) applies kernels 0..t−1 in turn,
or only kernel t−1 for 'Individual_Incremental').

Tolerance: our D(x0, t) multiplies the very transfer functions of the same truncated kernels,
so it is exact up to float64 rounding (1e-10) whenever both use the same truncation; the only
kernel-truncation error is in the effective-width claim (one Gaussian of σ(t) = sqrt(Σσ_i²)
versus t Gaussians), checked separately at 1e-4 for σ_i ≥ 1.5 px where sampled Gaussians
compose to within the aliasing term exp(−2π²σ²) and the ±4σ tails (≈ 6e-5 of the mass).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from corediff_plugins.degradations.blur import BlurConfig, BlurDegradation
from corediff_plugins.schedules.blur_constant import BlurConstantConfig, BlurConstantSchedule
from corediff_plugins.schedules.blur_exponential import (
    BlurExponentialConfig,
    BlurExponentialSchedule,
)
from corediff_plugins.schedules.blur_incremental import (
    BlurIncrementalConfig,
    BlurIncrementalSchedule,
)
from corediff_plugins.schedules.blur_individual_incremental import (
    BlurIndividualIncrementalConfig,
    BlurIndividualIncrementalSchedule,
)


def reference_blur(x: torch.Tensor, std: float, size: int, mode: str) -> torch.Tensor:
    """One Cold Diffusion kernel: tgm.get_gaussian_kernel2d((size, size), (std, std))."""
    j = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(j**2) / (2 * std**2))
    g = g / g.sum()
    kernel = torch.outer(g, g).to(x.dtype).expand(x.shape[1], 1, size, size)
    pad = size // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), kernel, groups=x.shape[1])


def reference_degrade(x, stds, t, mode, size=None, truncate=4.0):
    """x blurred by kernels stds[0..t−1] in turn, each ``size`` or 2·ceil(truncate·σ)+1 taps."""
    for std in stds[:t]:
        blur_size = size or 2 * math.ceil(truncate * std) + 1
        x = reference_blur(x, std, blur_size, mode)
    return x


ROUTINES = [  # schedule, reference per-step stds (kernel i = 0..T−1)
    (BlurIncrementalSchedule(BlurIncrementalConfig(steps=8, kernel_std=0.3)),
     [0.3 * (i + 1) for i in range(8)]),
    (BlurConstantSchedule(BlurConstantConfig(steps=8, kernel_std=0.8)), [0.8] * 8),
    (BlurExponentialSchedule(BlurExponentialConfig(steps=8, kernel_std=0.2)),
     [math.exp(0.2 * i) for i in range(8)]),
]


@pytest.mark.parametrize("mode", ["reflect", "circular"])
@pytest.mark.parametrize("schedule,stds", ROUTINES)
def test_composed_routines_match_iterative_convolution(schedule, stds, mode):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 24, 30, generator=generator, dtype=torch.float64) * 2 - 1
    degradation = BlurDegradation(BlurConfig(padding=mode), schedule=schedule)
    t = torch.tensor([0, 1, 5, 8])
    out = degradation.degrade(x, t)
    for i, step in enumerate(t.tolist()):
        expected = reference_degrade(x[i : i + 1], stds, step, mode)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-10, rtol=0)
    assert torch.equal(out[0], x[0])


def test_reference_fixed_kernel_size():
    """Cold Diffusion's default: 'Incremental', std 0.1·(i+1), 3×3 kernels, circular."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
    schedule = BlurIncrementalSchedule(BlurIncrementalConfig(steps=20, kernel_std=0.1))
    degradation = BlurDegradation(BlurConfig(padding="circular", kernel_size=3),
                                  schedule=schedule)
    stds = [0.1 * (i + 1) for i in range(20)]
    out = degradation.degrade(x, torch.tensor([20, 13]))
    torch.testing.assert_close(out[:1], reference_degrade(x[:1], stds, 20, "circular", 3),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:], reference_degrade(x[1:], stds, 13, "circular", 3),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="odd"):
        BlurConfig(kernel_size=4)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_individual_incremental_applies_only_kernel_t(mode):
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 40, 36, generator=generator, dtype=torch.float64) * 2 - 1
    schedule = BlurIndividualIncrementalSchedule(
        BlurIndividualIncrementalConfig(steps=4, kernel_std=0.5))
    out = BlurDegradation(BlurConfig(padding=mode), schedule=schedule).degrade(
        x, torch.tensor([1, 3, 4]))
    for i, step in enumerate([1, 3, 4]):
        std = 0.5 * (2 * step - 1)
        expected = reference_blur(x[i : i + 1], std, 2 * math.ceil(4 * std) + 1, mode)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-10, rtol=0)


def test_schedule_closed_forms():
    t = torch.arange(11, dtype=torch.float64)
    k = 0.3
    incremental = BlurIncrementalSchedule(BlurIncrementalConfig(steps=10, kernel_std=k))
    torch.testing.assert_close(incremental.values(), k * (t * (t + 1) * (2 * t + 1) / 6).sqrt())
    constant = BlurConstantSchedule(BlurConstantConfig(steps=10, kernel_std=k))
    torch.testing.assert_close(constant.values(), k * t.sqrt())
    exponential = BlurExponentialSchedule(BlurExponentialConfig(steps=10, kernel_std=k))
    expected = ((torch.exp(2 * k * t) - 1) / (math.exp(2 * k) - 1)).sqrt()
    torch.testing.assert_close(exponential.values(), expected)
    individual = BlurIndividualIncrementalSchedule(BlurIndividualIncrementalConfig(steps=10))
    torch.testing.assert_close(individual.values()[1:], 2.0 * (2 * t[1:] - 1))
    assert individual.values()[0] == 0


def test_effective_width_is_one_gaussian():
    """t blurs of std 1.5 ≈ one blur of std 1.5·sqrt(t) (the schedule's values)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 32, 32, generator=generator, dtype=torch.float64) * 2 - 1
    schedule = BlurConstantSchedule(BlurConstantConfig(steps=6, kernel_std=1.5))
    out = BlurDegradation(BlurConfig(padding="circular"), schedule=schedule).degrade(
        x, torch.tensor([6]))
    sigma = float(schedule.values()[6])
    single = reference_blur(x, sigma, 2 * math.ceil(4 * sigma) + 1, "circular")
    torch.testing.assert_close(out, single, atol=1e-4, rtol=0)


def test_to_mean_and_float32():
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 16, 20, generator=generator) * 2 - 1
    schedule = BlurConstantSchedule(BlurConstantConfig(steps=5, kernel_std=1.0))
    degradation = BlurDegradation(BlurConfig(to_mean=True, padding="circular"), schedule=schedule)
    out = degradation.degrade(x, torch.tensor([5, 4, 0]))
    assert out.dtype == torch.float32
    mean = x[0].mean((-2, -1), keepdim=True).expand_as(x[0])  # circular blur keeps the mean
    torch.testing.assert_close(out[0], mean, atol=1e-5, rtol=0)
    expected = reference_degrade(x[1:2].double(), [1.0] * 5, 4, "circular").float()
    torch.testing.assert_close(out[1:2], expected, atol=1e-5, rtol=0)
    assert torch.equal(out[2], x[2])
