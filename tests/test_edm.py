"""EDM (Karras et al. 2022): the Euler sampler against diffusers' EDMEulerScheduler step by
step, the Heun sampler (Algorithm 2) against a literal transcription of the paper's loop, the
preconditioning identities, the weighting, the log-normal time sampler, the degradation, the
recipe refusals and corediff.testing's conformance checks on the EDM chain."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import EDMEulerScheduler

import corediff
from corediff import testing
from corediff.maths.edm import loss_weight, preconditioning, sigma_steps
from corediff.maths.gaussian import karras_sigmas
from corediff.recipe import load_recipe
from corediff.registry import registry
from corediff_plugins.degradations.edm import EDMDegradation
from corediff_plugins.loss_weightings.edm import EDMWeighting
from corediff_plugins.parameterizations.edm import EDMParameterization
from corediff_plugins.samplers.edm_euler import EDMEulerSampler
from corediff_plugins.samplers.edm_heun import EDMHeunSampler
from corediff_plugins.schedules.edm import EDMSchedule
from corediff_plugins.time_samplers.lognormal_sigma import LogNormalSigmaTimeSampler

RECIPE = Path(__file__).parent.parent / "recipes" / "edm_digits.toml"
SHAPE = (2, 3, 8, 8)
SIGMA_DATA = 0.5
DEGRADATION = EDMDegradation(schedule=EDMSchedule())
PARAM = EDMParameterization(degradation=DEGRADATION)


def network(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    """F(c_in·x; c_noise): smooth in both, so every step's output differs."""
    c = c_noise.to(x_in.dtype).view(-1, 1, 1, 1)
    return 0.7 * torch.tanh(x_in) + 0.2 * torch.cos(3 * c) * x_in - 0.1 * c


def _x_T(dtype: torch.dtype) -> torch.Tensor:
    return 80.0 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _states(result) -> list[torch.Tensor]:
    return [step.x_t for step in result.trajectory] + [result.sample]


# -- maths -----------------------------------------------------------------------------------
def test_preconditioning_matches_table_1():
    sigma = torch.tensor([0.002, 0.1, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, SIGMA_DATA)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(0.25 / (s**2 + 0.25), rel=1e-14)
        assert c_out[i].item() == pytest.approx(s * 0.5 / math.sqrt(s**2 + 0.25), rel=1e-14)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + 0.25), rel=1e-14)
        assert c_noise[i].item() == pytest.approx(0.25 * math.log(s), rel=1e-14)
    torch.testing.assert_close(loss_weight(sigma, SIGMA_DATA), c_out.square().reciprocal())


def test_sigma_steps_are_the_karras_grid():
    grid = sigma_steps(18, 0.002, 80.0, 7.0)
    assert grid[0] == 80.0 and grid[-1] == 0.002 and grid == sorted(grid, reverse=True)
    torch.testing.assert_close(torch.tensor(grid, dtype=torch.float64),
                               karras_sigmas(18, 0.002, 80.0, 7.0), rtol=1e-14, atol=0)
    assert sigma_steps(18, 0.002, 80.0, 7.0, start=5.0) == [5.0] + [s for s in grid if s < 5]


# -- schedule and degradation ----------------------------------------------------------------
def test_schedule_values():
    values = EDMSchedule(EDMSchedule.Config(steps=10)).values()
    assert values.dtype == torch.float64 and values.shape == (11,)
    assert values[0] == 0 and values[1].item() == pytest.approx(0.002)
    assert values[-1].item() == pytest.approx(80.0) and bool((values.diff() > 0).all())
    with pytest.raises(ValueError, match="sigma_min"):
        EDMSchedule.Config(sigma_min=2.0, sigma_max=1.0)


def test_degradation_basics():
    assert DEGRADATION.t_max == 80.0 and isinstance(DEGRADATION.t_max, float)
    assert DEGRADATION.prior_std() == 80.0
    x0 = torch.rand(SHAPE, dtype=torch.float64) * 2 - 1
    t = torch.tensor([0.0, 3.5], dtype=torch.float64)
    noise = DEGRADATION.sample_noise(x0, torch.Generator().manual_seed(1))
    assert torch.equal(noise, DEGRADATION.sample_noise(x0, torch.Generator().manual_seed(1)))
    x_t = DEGRADATION.degrade(x0, t, noise)
    assert torch.equal(x_t[0], x0[0])
    torch.testing.assert_close(x_t[1], x0[1] + 3.5 * noise[1])
    eps = DEGRADATION.estimate_noise(x_t, x0, t)
    assert torch.equal(eps[0], torch.zeros_like(eps[0]))
    torch.testing.assert_close(eps[1], noise[1])
    snr = DEGRADATION.snr(torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert snr[0].isinf() and snr[1].item() == 0.25


# -- parameterization and weighting ----------------------------------------------------------
def test_preconditioning_identities():
    x0 = torch.rand(SHAPE, dtype=torch.float64) * 2 - 1
    t = torch.tensor([0.01, 7.0], dtype=torch.float64)
    noise = torch.randn(SHAPE, dtype=torch.float64)
    x_t = DEGRADATION.degrade(x0, t, noise)
    target = PARAM.target(x0, x_t, t, noise)
    prediction = PARAM.predict(target, x_t, t)  # the true F gives the true x0 and ε
    torch.testing.assert_close(prediction.x0, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prediction.eps, noise, rtol=1e-10, atol=1e-10)
    output = torch.randn(SHAPE, dtype=torch.float64)  # ||F − F̂||² = s(σ)·||x0 − D||²
    f_loss = (output - target).square().flatten(1).mean(1)
    x0_loss = (PARAM.predict(output, x_t, t).x0 - x0).square().flatten(1).mean(1)
    torch.testing.assert_close(f_loss, PARAM.x0_loss_scale(t) * x0_loss)
    x_in, c_noise = PARAM.condition(x_t, t)
    torch.testing.assert_close(x_in, x_t / (t**2 + 0.25).sqrt().view(-1, 1, 1, 1))
    torch.testing.assert_close(c_noise, 0.25 * t.log())
    scaled = EDMParameterization(EDMParameterization.Config(noise_scale=250.0),
                                 degradation=DEGRADATION)
    torch.testing.assert_close(scaled.condition(x_t, t)[1], 250 * 0.25 * t.log())


def test_edm_weighting_with_edm_parameterization_is_one():
    weighting = EDMWeighting(degradation=DEGRADATION, parameterization=PARAM)
    t = torch.logspace(-3, math.log10(80), 50, dtype=torch.float64)
    assert torch.equal(weighting.weight(t), torch.ones(50))
    other = EDMWeighting(EDMWeighting.Config(sigma_data=1.0), degradation=DEGRADATION,
                         parameterization=PARAM)
    expected = (t**2 + 1) / t**2 / ((t**2 + 0.25) / (0.5 * t) ** 2)
    torch.testing.assert_close(other.weight(t), expected.float())


# -- time sampler ----------------------------------------------------------------------------
def test_lognormal_moments_and_repeatability():
    sampler = LogNormalSigmaTimeSampler(degradation=DEGRADATION)
    sigma, weights = sampler.sample(200_000, torch.Generator().manual_seed(3), "cpu")
    assert weights is None and sigma.dtype == torch.float64
    assert (sigma > 0).all() and (sigma <= 80).all()
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.01)
    assert sigma.log().std().item() == pytest.approx(1.2, abs=0.01)
    again, _ = sampler.sample(200_000, torch.Generator().manual_seed(3), "cpu")
    assert torch.equal(sigma, again)
    high = LogNormalSigmaTimeSampler(LogNormalSigmaTimeSampler.Config(p_mean=10.0),
                                     degradation=DEGRADATION)
    assert (high.sample(100, torch.Generator().manual_seed(3), "cpu")[0] == 80.0).all()


# -- samplers --------------------------------------------------------------------------------
def _diffusers_euler(prediction_type: str, steps: int, dtype: torch.dtype):
    scheduler = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=SIGMA_DATA,
                                  sigma_schedule="karras", prediction_type=prediction_type,
                                  rho=7.0)
    scheduler.set_timesteps(steps)
    x = _x_T(dtype)
    states = [x]
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        output = network(x_in, t.expand(SHAPE[0]))
        x = scheduler.step(output, t, x).prev_sample
        states.append(x)
    return scheduler.sigmas[:-1], states


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [18, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edm_euler_matches_diffusers(prediction_type, steps, dtype):
    sign = 1.0 if prediction_type == "epsilon" else -1.0  # diffusers' v: c_out → −c_out
    sampler = EDMEulerSampler(EDMEulerSampler.Config(steps=steps), degradation=DEGRADATION,
                              parameterization=PARAM)
    result = sampler.sample(lambda x, c: sign * network(x, c), _x_T(dtype), trajectory=True)
    sigmas, states = _diffusers_euler(prediction_type, steps, dtype)
    ours = torch.tensor(sampler.timesteps(), dtype=torch.float64)
    torch.testing.assert_close(ours, sigmas.double(), rtol=1e-6, atol=0)  # theirs: float32
    assert result.nfe == sampler.nfe() == steps
    for ours, theirs in zip(_states(result), states, strict=True):
        torch.testing.assert_close(ours, theirs.to(dtype), rtol=1e-5, atol=1e-5)


def algorithm_2(x, sigmas, S_churn, S_tmin, S_tmax, S_noise, generator):  # noqa: N803
    """Karras et al. 2022, Algorithm 2, literally (float64), with D = c_skip·x + c_out·F.
    ε is drawn only where γ_i > 0 (elsewhere sqrt(t̂² − t_i²)·ε = 0)."""

    def D(x, t):  # noqa: N802
        c_skip = SIGMA_DATA**2 / (t**2 + SIGMA_DATA**2)
        c_out = t * SIGMA_DATA / math.sqrt(t**2 + SIGMA_DATA**2)
        c_in = 1 / math.sqrt(t**2 + SIGMA_DATA**2)
        c_noise = torch.full((x.shape[0],), 0.25 * math.log(t), dtype=torch.float64)
        return c_skip * x + c_out * network(c_in * x, c_noise)

    N = len(sigmas)  # noqa: N806
    t = sigmas + [0.0]
    states = [x]
    for i in range(N):
        gamma = min(S_churn / N, math.sqrt(2) - 1) if S_tmin <= t[i] <= S_tmax else 0.0
        t_hat = t[i] + gamma * t[i]
        x_hat = x
        if gamma > 0:
            eps = S_noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x_hat = x + math.sqrt(t_hat**2 - t[i] ** 2) * eps
        d = (x_hat - D(x_hat, t_hat)) / t_hat
        x = x_hat + (t[i + 1] - t_hat) * d
        if t[i + 1] != 0:
            d_prime = (x - D(x, t[i + 1])) / t[i + 1]
            x = x_hat + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d_prime)
        states.append(x)
    return states


@pytest.mark.parametrize(("churn", "tmin", "tmax", "noise"),
                         [(0.0, 0.0, math.inf, 1.0), (40.0, 0.05, 50.0, 1.003)])
def test_edm_heun_matches_algorithm_2(churn, tmin, tmax, noise):
    config = EDMHeunSampler.Config(steps=18, S_churn=churn, S_tmin=tmin, S_noise=noise,
                                   S_tmax=None if math.isinf(tmax) else tmax)
    sampler = EDMHeunSampler(config, degradation=DEGRADATION, parameterization=PARAM)
    x_T = _x_T(torch.float64)
    result = sampler.sample(network, x_T, generator=torch.Generator().manual_seed(1),
                            trajectory=True)
    sigmas = karras_sigmas(18, 0.002, 80.0, 7.0).tolist()
    expected = algorithm_2(x_T, sigmas, churn, tmin, tmax, noise,
                           torch.Generator().manual_seed(1))
    assert result.nfe == sampler.nfe() == 35
    for ours, theirs in zip(_states(result), expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    if churn:  # the churn changed the run
        deterministic = algorithm_2(x_T, sigmas, 0.0, 0, math.inf, 1.0, None)
        assert (expected[-1] - deterministic[-1]).abs().max() > 1e-3


def test_heun_start_and_nfe():
    sampler = EDMHeunSampler(EDMHeunSampler.Config(steps=10), degradation=DEGRADATION,
                             parameterization=PARAM)
    steps = sampler.timesteps(start=3.0)
    assert steps[0] == 3.0 and all(s < 3.0 for s in steps[1:])
    result = sampler.sample(network, _x_T(torch.float32) / 80 * 3, start=3.0)
    assert result.nfe == sampler.nfe(3.0) == 2 * len(steps) - 1


# -- recipes ---------------------------------------------------------------------------------
def test_recipe_loads():
    recipe = load_recipe(RECIPE)
    assert recipe.diffusion.sampler.type == "edm_heun"


GAUSSIAN = ["diffusion.schedule.type=cosine", "diffusion.degradation.type=gaussian"]


@pytest.mark.parametrize(("overrides", "match"), [
    (GAUSSIAN + ["diffusion.parameterization.type=v", "diffusion.time_sampler.type=uniform",
                 "diffusion.sampler.type=ddim"],
     r"loss_weighting 'edm' \[diffusion.loss_weighting\] needs a degradation that provides "
     r"'sigma_time', but degradation 'gaussian'"),
    (GAUSSIAN + ["diffusion.parameterization.type=v", "diffusion.loss_weighting.type=simple",
                 "diffusion.sampler.type=ddim"],
     r"time_sampler 'lognormal_sigma' .* needs a degradation that provides 'sigma_time'"),
    (GAUSSIAN + ["diffusion.loss_weighting.type=simple", "diffusion.time_sampler.type=uniform",
                 "diffusion.sampler.type=ddim"],
     r"parameterization 'edm' .* needs a degradation that provides 'sigma_time'"),
    (GAUSSIAN + ["diffusion.parameterization.type=v", "diffusion.loss_weighting.type=simple",
                 "diffusion.time_sampler.type=uniform"],
     r"sampler 'edm_heun' .* needs a degradation that provides 'sigma_time'"),
    (["diffusion.schedule.type=cosine"],
     r"degradation 'edm' .* needs a schedule that provides 'sigma'"),
    (["diffusion.parameterization.type=v"],
     r"parameterization 'v' .* needs a degradation that provides 'gaussian'"),
])
def test_bad_combinations_are_refused(overrides, match):
    with pytest.raises(corediff.CorediffError, match=match):
        load_recipe(RECIPE, overrides)


# -- conformance -----------------------------------------------------------------------------
CHAIN = {
    "schedule": EDMSchedule, "degradation": EDMDegradation,
    "parameterization": EDMParameterization, "loss_weighting": EDMWeighting,
    "sampler": EDMHeunSampler, "guidance": registry("guidance").get("none"),
    "prior": registry("prior").get("normal"), "time_sampler": LogNormalSigmaTimeSampler,
}
CHECKS = [testing.check_schedule, testing.check_degradation, testing.check_parameterization,
          testing.check_loss_weighting, testing.check_sampler, testing.check_prior,
          testing.check_time_sampler, testing.check_guidance]


@pytest.mark.parametrize("sampler", [EDMHeunSampler, EDMEulerSampler])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(sampler, check):
    check({**CHAIN, "sampler": sampler})
