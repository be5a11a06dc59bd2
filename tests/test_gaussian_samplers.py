"""DDPM / DDIM / one-step samplers against diffusers' DDPMScheduler and DDIMScheduler, step
by step, with the same analytic model, the same x_T and the same noise. diffusers gets our ᾱ
in the run's dtype (its own float32 cumprod drifts by ~4e-7 relative; the schedules are
compared elsewhere). Runs are float64, plus float32 where 1000 stochastic float32 steps do not
amplify rounding past the 1e-5 tolerance (the 10 / 50-step runs)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.parameterizations.eps import EpsParameterization
from corediff_plugins.priors.normal import NormalPrior
from corediff_plugins.samplers.ddim import DDIMSampler
from corediff_plugins.samplers.ddpm import DDPMSampler
from corediff_plugins.samplers.one_step import OneStepSampler
from corediff_plugins.schedules.linear import LinearSchedule

T = 1000
SHAPE = (2, 3, 8, 8)
DEGRADATION = GaussianDegradation(schedule=LinearSchedule())
ALPHA_BAR = DEGRADATION.schedule.values()
PARAM = EpsParameterization(degradation=DEGRADATION)


def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The optimal ε̂ for data N(0.2, 0.5²) per pixel, plus a smooth t-dependent wobble."""
    alpha_bar = ALPHA_BAR[t].to(x.dtype).view(-1, 1, 1, 1)
    centred = x - alpha_bar.sqrt() * 0.2
    eps = (1 - alpha_bar).sqrt() * centred / (0.25 * alpha_bar + 1 - alpha_bar)
    return eps + 0.01 * torch.cos(t / 100).to(x.dtype).view(-1, 1, 1, 1) * torch.tanh(x)


def _x_T(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _ours(result) -> list[torch.Tensor]:
    return [step.x_t for step in result.trajectory] + [result.sample]


def _diffusers_ddim(spacing: str, count: int, eta: float, noises: list[torch.Tensor],
                    dtype: torch.dtype):
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                              timestep_spacing=spacing, steps_offset=0)
    scheduler.alphas_cumprod = ALPHA_BAR[1:].to(dtype)
    scheduler.set_timesteps(count)
    ks = scheduler.timesteps.tolist()
    stride = T // count
    alphas_cumprod, final = scheduler.alphas_cumprod, scheduler.final_alpha_cumprod
    x = _x_T(dtype)
    states = [x]
    for i, k in enumerate(ks):
        k_prev = ks[i + 1] if i + 1 < len(ks) else -1
        # diffusers' DDIM steps to k - T // count, which is not the next listed step for
        # "linspace"; point that index at ᾱ of the next listed step (our semantics).
        if max(k - stride, -1) != k_prev:
            assert spacing == "linspace"
            wanted = alphas_cumprod[k_prev] if k_prev >= 0 else final
            if k - stride >= 0:
                scheduler.alphas_cumprod = alphas_cumprod.clone()
                scheduler.alphas_cumprod[k - stride] = wanted
            else:
                scheduler.final_alpha_cumprod = wanted
        output = eps_model(x, torch.full((SHAPE[0],), k + 1))
        x = scheduler.step(output, k, x, eta=eta, variance_noise=noises[i]).prev_sample
        scheduler.alphas_cumprod, scheduler.final_alpha_cumprod = alphas_cumprod, final
        states.append(x)
    return ks, states


DDIM_CASES = [(c, d) for c in (10, 50, 1000) for d in (torch.float64, torch.float32)
              if c < 1000 or d == torch.float64]


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize(("count", "dtype"), DDIM_CASES)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_matches_diffusers(spacing, count, dtype, eta):
    sampler = DDIMSampler(DDIMSampler.Config(steps=count, spacing=spacing, eta=eta),
                          degradation=DEGRADATION, parameterization=PARAM)
    result = sampler.sample(eps_model, _x_T(dtype), generator=torch.Generator().manual_seed(1),
                            trajectory=True)
    replay = torch.Generator().manual_seed(1)
    noises = [torch.randn(SHAPE, generator=replay, dtype=dtype) for _ in range(count - 1)]
    noises.append(torch.zeros(SHAPE, dtype=dtype))  # σ = 0 on the last step: nothing drawn
    ks, states = _diffusers_ddim(spacing, count, eta, noises, dtype)
    assert sampler.timesteps() == [k + 1 for k in ks]
    assert [step.t for step in result.trajectory] == sampler.timesteps()
    for ours, theirs in zip(_ours(result), states, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def _diffusers_ddpm(variance: str, spacing: str, count: int | None):
    scheduler = DDPMScheduler(beta_schedule="linear", clip_sample=False, variance_type=variance,
                              timestep_spacing=spacing)
    scheduler.alphas_cumprod = ALPHA_BAR[1:]
    if count is not None:
        scheduler.set_timesteps(count)
    generator = torch.Generator().manual_seed(1)
    x = _x_T()
    states = [x]
    for k in scheduler.timesteps.tolist():
        output = eps_model(x, torch.full((SHAPE[0],), k + 1))
        x = scheduler.step(output, k, x, generator=generator).prev_sample
        states.append(x)
    return states


@pytest.mark.parametrize(
    ("variance", "spacing", "count"),
    [("fixed_small", "leading", None), ("fixed_large", "leading", None),
     ("fixed_small", "leading", 50), ("fixed_large", "linspace", 37),
     ("fixed_small", "linspace", 20)],
)
def test_ddpm_matches_diffusers(variance, spacing, count):
    sampler = DDPMSampler(DDPMSampler.Config(variance=variance, spacing=spacing, steps=count),
                          degradation=DEGRADATION, parameterization=PARAM)
    result = sampler.sample(eps_model, _x_T(), generator=torch.Generator().manual_seed(1),
                            trajectory=True)
    states = _diffusers_ddpm(variance, spacing, count)
    assert len(result.trajectory) == (count or T)
    for ours, theirs in zip(_ours(result), states, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_ddim_eta_one_is_respaced_ddpm():
    # DDIM at η = 1 is ancestral sampling with the respaced posterior (Song et al. 2021).
    config = {"steps": 25, "spacing": "ddim25"}
    ddim = DDIMSampler(DDIMSampler.Config(eta=1.0, **config), degradation=DEGRADATION,
                       parameterization=PARAM)
    ddpm = DDPMSampler(DDPMSampler.Config(**config), degradation=DEGRADATION,
                       parameterization=PARAM)
    a, b = (s.sample(eps_model, _x_T(), generator=torch.Generator().manual_seed(3))
            for s in (ddim, ddpm))
    torch.testing.assert_close(a.sample, b.sample, rtol=1e-5, atol=1e-5)


def test_learned_variance_maps_to_respaced_bounds():
    # v = -1 is log β̃ and v = +1 log β of the one-step posterior; on a respaced chain they
    # must become the respaced fixed_small / fixed_large variances.
    learned = EpsParameterization(EpsParameterization.Config(variance="learned_range"),
                                  degradation=DEGRADATION)
    for v, variance in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        def model(x, t, v=v):
            return torch.cat([eps_model(x, t), torch.full_like(x, v)], 1)

        runs = []
        for param, kind in ((learned, "fixed_small"), (PARAM, variance)):
            sampler = DDPMSampler(DDPMSampler.Config(steps=20, spacing="trailing", variance=kind),
                                  degradation=DEGRADATION, parameterization=param)
            run_model = model if param is learned else eps_model
            runs.append(sampler.sample(run_model, _x_T(),
                                       generator=torch.Generator().manual_seed(4)).sample)
        torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-5)


def test_start_clip_and_one_step():
    ddim = DDIMSampler(DDIMSampler.Config(steps=10, clip_x0=True), degradation=DEGRADATION,
                       parameterization=PARAM)
    assert ddim.timesteps(450) == [450, 400, 300, 200, 100]
    result = ddim.sample(eps_model, _x_T(), start=450, trajectory=True)
    assert [step.t for step in result.trajectory] == [450, 400, 300, 200, 100]
    assert all(step.x0_hat.abs().max() <= 1 for step in result.trajectory)
    torch.testing.assert_close(result.direct, result.trajectory[0].x0_hat)
    one = OneStepSampler(degradation=DEGRADATION, parameterization=PARAM)
    x = _x_T()
    out = one.sample(eps_model, x, start=300)
    t = torch.full((SHAPE[0],), 300)
    expected = (x - (1 - ALPHA_BAR[300]).sqrt() * eps_model(x, t)) / ALPHA_BAR[300].sqrt()
    torch.testing.assert_close(out.sample, expected)
    assert one.timesteps() == [T]


def test_normal_prior():
    prior = NormalPrior(NormalPrior.Config(scale=2.0), degradation=DEGRADATION)
    assert prior.start_step() == T
    x = prior.sample((4000, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 3, 2, 2)
    assert abs(x.mean()) < 0.05 and abs(x.std() - 2.0) < 0.05
