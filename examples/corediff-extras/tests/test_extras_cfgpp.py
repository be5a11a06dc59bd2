"""CFG++ against its closed form (Chung et al. 2024, Algorithm 1)."""

from __future__ import annotations

import pytest
import torch

import corediff
from corediff.denoiser import Denoiser
from corediff.interfaces import Step

T = 100
NULL = 10


def build(parameterization_name: str, scale: float):
    schedule = corediff.create("schedule", "cosine", steps=T)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    parameterization = corediff.create("parameterization", parameterization_name,
                                       degradation=degradation)
    guidance = corediff.create("guidance", "cfgpp", degradation=degradation,
                               parameterization=parameterization, scale=scale)
    return schedule.values(), degradation, parameterization, guidance


def network(x, t, y):
    """A fake class-conditional network whose output depends on the label (NULL included)."""
    label = y.to(x.dtype).view(-1, 1, 1, 1)
    return 0.5 * torch.tanh(x) + 0.05 * label + t.to(x.dtype).view(-1, 1, 1, 1) / (4 * T)


def closed_form(alpha_bar, parameterization_name, x, t, y, scale):
    """(x̂0(ε̂_λ), ε̂_∅) from the raw outputs, with the standard conversions written out."""
    a, s = alpha_bar[t].sqrt().view(-1, 1, 1, 1), (1 - alpha_bar[t]).sqrt().view(-1, 1, 1, 1)
    steps = torch.full((x.shape[0],), t, dtype=torch.long)
    cond, uncond = network(x, steps, y), network(x, steps, torch.full_like(y, NULL))
    if parameterization_name == "v":  # ε = α·v + σ·x_t
        cond, uncond = a * cond + s * x, a * uncond + s * x
    eps_guided = uncond + scale * (cond - uncond)
    return (x - s * eps_guided) / a, uncond


@pytest.mark.parametrize("parameterization_name", ["eps", "v", "x0"])
@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("t", [1, 37, T])
def test_combine_closed_form(parameterization_name, scale, t):
    alpha_bar, _, parameterization, guidance = build(parameterization_name, scale)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    y = torch.tensor([0, 3, 9])
    denoise = Denoiser(network, parameterization, guidance=guidance, labels=y, null_label=NULL)
    prediction = denoise(x, t)
    assert denoise.evaluations == 1  # one evaluation on the doubled batch
    if parameterization_name == "x0":  # x0-prediction: the closed form in x̂0 terms
        steps = torch.full((3,), t, dtype=torch.long)
        cond, uncond = network(x, steps, y), network(x, steps, torch.full_like(y, NULL))
        a = alpha_bar[t].sqrt()
        s = (1 - alpha_bar[t]).sqrt()
        x0, eps_uncond = uncond + scale * (cond - uncond), (x - a * uncond) / s
    else:
        x0, eps_uncond = closed_form(alpha_bar, parameterization_name, x, t, y, scale)
    torch.testing.assert_close(prediction.x0, x0, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(prediction.eps, eps_uncond, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("parameterization_name", ["eps", "v"])
def test_one_ddim_step_is_algorithm_1(parameterization_name):
    """x_s = sqrt(ᾱ_s)·x̂0(λ) + sqrt(1 − ᾱ_s)·ε̂_∅ with deterministic DDIM (η = 0)."""
    scale = 0.6
    alpha_bar, degradation, parameterization, guidance = build(parameterization_name, scale)
    ddim = corediff.create("sampler", "ddim", degradation=degradation,
                           parameterization=parameterization, steps=10, eta=0.0)
    visited = ddim.timesteps()
    t, s = visited[2], visited[3]
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = torch.tensor([1, 2, 7])
    denoise = Denoiser(network, parameterization, guidance=guidance, labels=y, null_label=NULL)
    step = Step(index=2, t=t, t_next=s, is_last=False, plan=ddim.plan(visited)[2],
                generator=None, state={})
    x_next, x0_hat = ddim.step(x, step, denoise)
    x0, eps_uncond = closed_form(alpha_bar, parameterization_name, x, t, y, scale)
    expected = alpha_bar[s].sqrt() * x0 + (1 - alpha_bar[s]).sqrt() * eps_uncond
    torch.testing.assert_close(x0_hat, x0, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(x_next, expected, atol=1e-9, rtol=1e-9)


def test_scale_zero_is_the_unconditional_model():
    """λ = 0 samples the unconditional model, so the guidance is active at every λ."""
    _, degradation, parameterization, guidance = build("eps", 0.0)
    assert all(guidance.active(t) for t in range(1, T + 1))
    ddim = corediff.create("sampler", "ddim", degradation=degradation,
                           parameterization=parameterization, steps=10)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = torch.tensor([4, 5])
    guided = ddim.sample(Denoiser(network, parameterization, guidance=guidance, labels=y,
                                  null_label=NULL), x)
    null = torch.full_like(y, NULL)
    unconditional = ddim.sample(lambda x_t, t: network(x_t, t, null), x)
    torch.testing.assert_close(guided.sample, unconditional.sample, atol=1e-9, rtol=1e-9)
    assert guided.nfe == unconditional.nfe == 10


def test_scale_is_in_unit_interval():
    with pytest.raises(corediff.ConfigError):
        build("eps", 1.5)
