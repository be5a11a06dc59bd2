"""Gaussian ᾱ schedules against diffusers' DDPMScheduler (betas cumulated in float64, since
diffusers keeps float32) and the respacing rules against diffusers / improved-diffusion."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

from corediff.maths.timesteps import TimeGridConfig, space_timesteps
from corediff_plugins.schedules.cosine import CosineSchedule
from corediff_plugins.schedules.linear import LinearSchedule
from corediff_plugins.schedules.quadratic import QuadraticSchedule
from corediff_plugins.schedules.scaled_linear import ScaledLinearSchedule
from corediff_plugins.schedules.sigmoid import SigmoidSchedule

CASES = [
    (LinearSchedule, "linear", {}),
    (ScaledLinearSchedule, "scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
    (CosineSchedule, "squaredcos_cap_v2", {}),
    (SigmoidSchedule, "sigmoid", {}),
]


def _reference(name: str, kwargs: dict, rescale: bool, steps: int = 1000) -> torch.Tensor:
    betas = DDPMScheduler(num_train_timesteps=steps, beta_schedule=name, **kwargs).betas.double()
    if rescale:
        betas = rescale_zero_terminal_snr(betas)
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize(("cls", "name", "kwargs"), CASES)
def test_matches_diffusers(cls, name, kwargs, rescale):
    values = cls(cls.Config(rescale_zero_terminal_snr=rescale)).values()
    assert values.dtype == torch.float64 and values.shape == (1001,)
    assert values[0] == 1
    reference = _reference(name, kwargs, rescale)
    if rescale:
        assert values[-1] == 0 and reference[-1].abs() < 1e-12
        values, reference = values[:-1], reference[:-1]
    # atol: diffusers stores β in float32; 1 - fl(0.999) at the cosine cap is off by 6e-8
    torch.testing.assert_close(values[1:], reference, rtol=1e-6, atol=1e-12)


def test_linear_scales_with_steps():
    # improved-diffusion: β ends scale by 1000/T, so T = 250 uses 4e-4 .. 0.08
    betas = 1 - LinearSchedule(LinearSchedule.Config(steps=250)).values()[1:].double()
    reference = 1 - _reference("linear", {"beta_start": 4e-4, "beta_end": 0.08}, False, 250)
    torch.testing.assert_close(betas, reference, rtol=1e-6, atol=0)


def test_quadratic_is_sqrt_linear():
    alpha_bar = QuadraticSchedule().values()
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    torch.testing.assert_close(betas.sqrt()[[0, -1]], torch.tensor([1e-2, 0.02**0.5]).double())
    second_difference = betas.sqrt().diff().diff()
    assert second_difference.abs().max() < 1e-12


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("count", [1, 7, 10, 50, 1000])
def test_diffusers_spacings(spacing, count):
    for scheduler in (DDIMScheduler(timestep_spacing=spacing),
                      DDPMScheduler(timestep_spacing=spacing)):
        scheduler.set_timesteps(count)
        assert space_timesteps(1000, count, spacing) == (scheduler.timesteps + 1).tolist()


def test_improved_diffusion_spacings():
    # improved-diffusion's space_timesteps(1000, "ddim50") = range(0, 1000, 20);
    # space_timesteps(300, [10, 15, 20]) starts each section of 100 at its first index and
    # ends it at its last (rounded strides 11, 7.07.., 5.21..).
    assert space_timesteps(1000, None, "ddim50") == [k + 1 for k in range(980, -1, -20)]
    kept = sorted(space_timesteps(300, None, "10,15,20"))
    assert len(kept) == 45
    ends = [kept[0], kept[9], kept[10], kept[24], kept[25], kept[-1]]
    assert ends == [1, 100, 101, 200, 201, 300]
    assert kept[:3] == [1, 12, 23] and kept[10:13] == [101, 108, 115]
    with pytest.raises(ValueError):
        space_timesteps(100, None, "ddim33")


def test_spacing_config_validation():
    assert TimeGridConfig(type="x", spacing="ddim50", steps=50).steps == 50
    for bad in ({"spacing": "ddim50", "steps": 40}, {"spacing": "fancy"}, {"spacing": "3,,4"}):
        with pytest.raises(ValueError):
            TimeGridConfig(type="x", **bad)
