"""The public time grid (corediff.maths.timesteps.time_grid): the lists first-party samplers visit,
against diffusers' and improved-diffusion's rules."""

from __future__ import annotations

import pytest

import corediff
from corediff.maths.timesteps import even_steps, time_grid


def test_the_issue_example_trailing_from_700():
    assert time_grid(1000, 5, "trailing", start=700) == [700, 600, 400, 200]
    assert time_grid(1000, 5, "trailing") == [1000, 800, 600, 400, 200]


def test_every_first_party_sampler_visits_the_public_grid():
    schedule = corediff.create("schedule", "cosine", steps=1000)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    param = corediff.create("parameterization", "eps", degradation=degradation)
    for name, spacing in (("ddim", "trailing"), ("ddpm", "leading"), ("ddim", "ddim25"),
                          ("ddpm", "10,15,25")):
        count = 50 if "," in spacing else (25 if spacing == "ddim25" else 20)
        sampler = corediff.create("sampler", name, degradation=degradation,
                                  parameterization=param, steps=count, spacing=spacing)
        for start in (None, 700):
            assert sampler.timesteps(start) == time_grid(1000, count, spacing, start)
    cold = corediff.create("sampler", "cold_improved", degradation=degradation,
                           parameterization=param, steps=7)
    assert cold.timesteps(600) == time_grid(1000, 7, "even", 600) == even_steps(1000, 7, 600)


def test_improved_diffusion_section_rounding():
    # improved-diffusion space_timesteps(100, "10,15"): sections of 50, strides 49/9 and 49/14
    expected = {round(i * 49 / 9) for i in range(10)} | {50 + round(i * 49 / 14)
                                                         for i in range(15)}
    assert time_grid(100, None, "10,15") == sorted((k + 1 for k in expected), reverse=True)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="cannot take 20 sampling steps from T = 10"):
        time_grid(10, 20, "trailing")
    with pytest.raises(ValueError, match="start must lie in 1..10"):
        time_grid(10, 5, "even", start=11)
