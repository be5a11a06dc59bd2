"""Flow matching: corediff.maths.flow, the flow schedule / degradation / velocity parameterization /
logit-normal time sampler, and the Euler and Heun samplers against diffusers'
FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler step by step (float32, as
diffusers steps), with the same analytic velocity model and the same x_1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

import corediff
from corediff import testing
from corediff.maths.flow import flow_time_grid, shift_time
from corediff.maths.timesteps import visit_from
from corediff.registry import registry
from corediff_plugins.degradations.flow import FlowDegradation
from corediff_plugins.parameterizations.velocity import VelocityParameterization
from corediff_plugins.samplers.flow_euler import FlowEulerSampler
from corediff_plugins.samplers.flow_heun import FlowHeunSampler
from corediff_plugins.schedules.flow import FlowSchedule
from corediff_plugins.time_samplers.logit_normal import LogitNormalTimeSampler

RECIPE = Path(__file__).parent.parent / "recipes" / "flow_digits.toml"
SHAPE = (2, 3, 8, 8)
DEGRADATION = FlowDegradation(schedule=FlowSchedule())
PARAM = VelocityParameterization(degradation=DEGRADATION)
SAMPLERS = {"flow_euler": (FlowEulerSampler, FlowMatchEulerDiscreteScheduler),
            "flow_heun": (FlowHeunSampler, FlowMatchHeunDiscreteScheduler)}


def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The analytic 'network': v = 0.9·tanh(x) + 0.1·σ (σ [B] or a scalar)."""
    return 0.9 * torch.tanh(x) + 0.1 * sigma.to(x.dtype).reshape(-1, 1, 1, 1)


def _x1(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _diffusers(scheduler_cls: type, steps: int, shift: float):
    """diffusers' loop: (its distinct σ, the state after every full step)."""
    scheduler = scheduler_cls(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(steps)
    x = _x1()
    states = [x]
    timesteps = scheduler.timesteps
    for i, timestep in enumerate(timesteps):
        x = scheduler.step(velocity(x, timestep / 1000), timestep, x).prev_sample
        heun = scheduler_cls is FlowMatchHeunDiscreteScheduler
        if not heun or i % 2 == 1 or i == len(timesteps) - 1:  # Heun: a step is two calls
            states.append(x)
    return torch.unique_consecutive(scheduler.sigmas[:-1]), states, len(timesteps)


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_matches_diffusers(name: str, shift: float, steps: int) -> None:
    ours_cls, theirs_cls = SAMPLERS[name]
    sampler = ours_cls(ours_cls.Config(steps=steps, shift=shift), degradation=DEGRADATION,
                       parameterization=PARAM)
    sigmas, states, calls = _diffusers(theirs_cls, steps, shift)
    grid = sampler.timesteps()
    assert grid[0] == 1.0 and len(grid) == steps
    assert torch.equal(torch.tensor(grid, dtype=torch.float32), sigmas), "same time grid"
    result = sampler.sample(lambda x, t: velocity(x, t / 1000), _x1(), trajectory=True)
    ours = [step.x_t for step in result.trajectory] + [result.sample]
    assert len(ours) == len(states) == steps + 1
    for i, (a, b) in enumerate(zip(ours, states, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m, i=i: f"x_{i}: {m}")
    assert result.nfe == sampler.nfe() == calls


def test_flow_maths() -> None:
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(shift_time(t, 1.0), t)
    shifted = shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted >= t).all()
    assert (shifted.diff() > 0).all()
    grid = flow_time_grid(5, 3.0)
    assert grid == sorted(grid, reverse=True) and grid[0] == 1.0 and len(grid) == 5
    assert flow_time_grid(1) == [1.0]
    assert visit_from(grid, None, 1.0) == grid
    assert visit_from(grid, 0.9, 1.0) == [0.9] + [g for g in grid if g < 0.9]
    with pytest.raises(ValueError, match="start"):
        visit_from(grid, 1.5, 1.0)


def test_heun_nfe_and_start() -> None:
    sampler = FlowHeunSampler(FlowHeunSampler.Config(steps=10), degradation=DEGRADATION,
                              parameterization=PARAM)
    assert sampler.nfe() == 19 and sampler.nfe(0.5) == 2 * len(sampler.timesteps(0.5)) - 1
    assert sampler.timesteps(0.5)[0] == 0.5
    result = sampler.sample(lambda x, t: velocity(x, t / 1000), _x1(), start=0.5)
    assert result.nfe == sampler.nfe(0.5)


def test_degradation() -> None:
    x0 = testing.images(dtype=torch.float64)
    eps = DEGRADATION.sample_noise(x0, torch.Generator().manual_seed(1))
    zeros, ones = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    assert DEGRADATION.t_max == 1.0 and isinstance(DEGRADATION.t_max, float)
    assert torch.equal(DEGRADATION.degrade(x0, zeros, eps), x0)
    assert torch.equal(DEGRADATION.degrade(x0, ones, eps), eps)
    t = torch.tensor([0.0, 0.01, 0.5, 1.0], dtype=torch.float64)
    x_t = DEGRADATION.degrade(x0, t, eps)
    torch.testing.assert_close(x_t[2], 0.5 * (x0[2] + eps[2]))
    recovered = DEGRADATION.estimate_noise(x_t, x0, t)
    assert torch.equal(recovered[0], torch.zeros_like(x0[0])), "zeros at t = 0"
    torch.testing.assert_close(recovered[1:], eps[1:], atol=1e-10, rtol=0)
    steps = torch.tensor([0, 10, 500, 1000])  # an integer tensor: grid steps k / 1000
    torch.testing.assert_close(DEGRADATION.degrade(x0, steps, eps),
                               DEGRADATION.degrade(x0, steps / 1000, eps))
    assert torch.equal(FlowSchedule(FlowSchedule.Config(steps=4)).values(),
                       torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))


def test_velocity_parameterization() -> None:
    x0 = testing.images(dtype=torch.float64)
    eps = DEGRADATION.sample_noise(x0, torch.Generator().manual_seed(2))
    t = torch.tensor([0.01, 0.3, 0.7, 1.0], dtype=torch.float64)
    x_t = DEGRADATION.degrade(x0, t, eps)
    v = PARAM.target(x0, x_t, t, eps)
    assert torch.equal(v, eps - x0)
    prediction = PARAM.predict(v, x_t, t)
    torch.testing.assert_close(prediction.x0, x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(prediction.eps, eps, atol=1e-12, rtol=0)
    v_hat = v + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3),
                                  dtype=torch.float64)
    x0_hat = PARAM.predict(v_hat, x_t, t).x0
    v_err, x0_err = ((a - b).square().flatten(1).sum(1) for a, b in ((v, v_hat), (x0, x0_hat)))
    torch.testing.assert_close(v_err, PARAM.x0_loss_scale(t) * x0_err)
    assert torch.isfinite(PARAM.x0_loss_scale(torch.zeros(2, dtype=torch.float64))).all()
    x_in, t_in = PARAM.condition(x_t, t)
    assert x_in is x_t and torch.equal(t_in, 1000 * t)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_true_velocity_returns_the_data(name: str, shift: float) -> None:
    """A single-point data distribution x*: the exact velocity is v(x, t) = (x − x*) / t, its
    flow is straight, and both samplers land on x* from any x_1."""
    cls = SAMPLERS[name][0]
    sampler = cls(cls.Config(steps=7, shift=shift), degradation=DEGRADATION,
                  parameterization=PARAM)
    x_star = testing.images(dtype=torch.float64)[:2]
    x1 = _x1(torch.float64)

    def exact(x: torch.Tensor, time_value: torch.Tensor) -> torch.Tensor:
        return (x - x_star) / (time_value / 1000).view(-1, 1, 1, 1)

    result = sampler.sample(exact, x1, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(result.sample, x_star, atol=1e-9, rtol=0)
    torch.testing.assert_close(result.direct, x_star, atol=1e-9, rtol=0)


def test_logit_normal() -> None:
    config = LogitNormalTimeSampler.Config(mean=0.5, std=1.5)
    sampler = LogitNormalTimeSampler(config, degradation=DEGRADATION)
    t, weights = sampler.sample(20_000, torch.Generator().manual_seed(5), "cpu")
    assert weights is None and t.dtype == torch.float64 and t.shape == (20_000,)
    assert (t > 0).all() and (t < 1).all()
    logit = torch.logit(t)
    assert abs(logit.mean().item() - 0.5) < 0.05 and abs(logit.std().item() - 1.5) < 0.05
    again, _ = sampler.sample(20_000, torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(t, again)
    extreme = LogitNormalTimeSampler(LogitNormalTimeSampler.Config(std=100.0),
                                     degradation=DEGRADATION)
    t, _ = extreme.sample(1000, torch.Generator().manual_seed(6), "cpu")
    assert t.min() >= 1e-5 and t.max() <= 1 - 1e-5


@pytest.mark.parametrize(("overrides", "sentence"), [
    (["diffusion.schedule.type=rank_linear", "diffusion.schedule.steps=16",
      "diffusion.degradation.type=svd"],
     r"sampler 'flow_euler' \[diffusion.sampler\] needs a degradation that provides "
     r"'flow_path', 'unit_time', but degradation 'svd'"),
    (["diffusion.schedule.type=cosine", "diffusion.degradation.type=gaussian",
      "diffusion.time_sampler.type=uniform"],
     r"parameterization 'velocity' \[diffusion.parameterization\] needs a degradation that "
     r"provides 'flow_path', but degradation 'gaussian'"),
    (["diffusion.schedule.type=cosine", "diffusion.degradation.type=gaussian",
      "diffusion.parameterization.type=v", "diffusion.sampler.type=ddim"],
     r"time_sampler 'logit_normal' \[diffusion.time_sampler\] needs a degradation that "
     r"provides 'unit_time', but degradation 'gaussian'"),
    (["diffusion.degradation.type=gaussian", "diffusion.parameterization.type=v",
      "diffusion.sampler.type=ddim", "diffusion.time_sampler.type=uniform"],
     r"degradation 'gaussian' \[diffusion.degradation\] needs a schedule that provides "
     r"'alpha_bar', but schedule 'flow'"),
])
def test_bad_combinations_refused(overrides: list[str], sentence: str) -> None:
    with pytest.raises(corediff.CorediffError, match=sentence):
        corediff.load_recipe(RECIPE, overrides)


def test_recipe_loads() -> None:
    recipe = corediff.load_recipe(RECIPE)
    assert recipe.diffusion.sampler.type == "flow_euler"


def _chain(sampler: str) -> dict:
    names = {"schedule": "flow", "degradation": "flow", "parameterization": "velocity",
             "loss_weighting": "simple",
             "sampler": sampler, "guidance": "none", "prior": "normal",
             "time_sampler": "logit_normal"}
    return {kind: registry(kind).get(name) for kind, name in names.items()}


CHECKS = [(kind, sampler) for kind in ("schedule", "degradation", "parameterization",
                                       "loss_weighting", "guidance", "prior", "time_sampler")
          for sampler in ("flow_euler",)] + [("sampler", s) for s in sorted(SAMPLERS)]


@pytest.mark.parametrize(("kind", "sampler"), CHECKS)
def test_conformance(kind: str, sampler: str) -> None:
    """corediff.testing's checks on a chain of the flow plugins (the sampler check includes
    the true-x0 oracle through the velocity parameterization's 1000·t conditioning)."""
    testing.CHECKS[kind](_chain(sampler))
