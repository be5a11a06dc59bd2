"""Cold Diffusion samplers (Bansal et al. 2022, Algorithms 1 and 2) against a literal
transcription of the algorithms, the true-x0 oracle, and DDIM (η = 0) for Gaussian noise."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from corediff.config import ComponentConfig
from corediff.interfaces import Parameterization, Prediction
from corediff_plugins.degradations.blur import BlurConfig, BlurDegradation
from corediff_plugins.degradations.svd import SVDDegradation
from corediff_plugins.parameterizations.residual import ResidualParameterization
from corediff_plugins.samplers.cold_improved import ColdImprovedConfig, ColdImprovedSampler
from corediff_plugins.samplers.cold_naive import ColdNaiveConfig, ColdNaiveSampler
from corediff_plugins.schedules.blur_incremental import (
    BlurIncrementalConfig,
    BlurIncrementalSchedule,
)
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule


class DirectConfig(ComponentConfig):
    type: Literal["direct"] = "direct"


class Direct(Parameterization):
    """The network output is x̂0 itself (so a test's model is the restoration R)."""

    Config = DirectConfig

    def predict(self, output, x_t, t):
        return Prediction(x0=output)

    def target(self, x0, x_t, t, noise):
        return x0


def restoration(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """An analytic R(x_s, s) that depends on both arguments."""
    return 0.8 * x + 0.02 * t.view(-1, 1, 1, 1) * torch.tanh(x)


def svd(steps: int = 12) -> SVDDegradation:
    return SVDDegradation(schedule=RankLinearSchedule(RankLinearConfig(steps=steps)))


def blur(steps: int = 10) -> BlurDegradation:
    schedule = BlurIncrementalSchedule(BlurIncrementalConfig(steps=steps, kernel_std=0.3))
    return BlurDegradation(BlurConfig(padding="circular"), schedule=schedule)


def algorithm(degradation, x_T, R, improved: bool, visited: list[int]) -> torch.Tensor:
    """Algorithms 1 and 2 written out: x̂0 = R(x_s, s); x_{s'} = D(x̂0, s') (naive) or
    x_s − D(x̂0, s) + D(x̂0, s') (improved), s' the next visited step (0 at the end)."""
    x = x_T
    for i, s in enumerate(visited):
        s_next = visited[i + 1] if i + 1 < len(visited) else 0
        x0_hat = R(x, torch.full((x.shape[0],), s))
        d_next = x0_hat if s_next == 0 else degradation.degrade(
            x0_hat, torch.full((x.shape[0],), s_next))
        if improved:
            x = x - degradation.degrade(x0_hat, torch.full((x.shape[0],), s)) + d_next
        else:
            x = d_next
    return x


@pytest.mark.parametrize("make", [svd, blur])
@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("steps", [None, 4])
def test_samplers_transcribe_the_algorithms(make, improved, steps):
    degradation = make()
    cls, cfg = (ColdImprovedSampler, ColdImprovedConfig) if improved else (ColdNaiveSampler,
                                                                           ColdNaiveConfig)
    sampler = cls(cfg(steps=steps), degradation=degradation, parameterization=Direct(
        degradation=degradation))
    generator = torch.Generator().manual_seed(0)
    x_T = torch.rand(3, 2, 12, 12, generator=generator) * 2 - 1
    visited = sampler.timesteps()
    T = degradation.steps
    assert visited == (list(range(T, 0, -1)) if steps is None else
                       [round(T - i * T / steps) for i in range(steps)])
    result = sampler.sample(restoration, x_T, trajectory=True)
    expected = algorithm(degradation, x_T, restoration, improved, visited)
    torch.testing.assert_close(result.sample, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.direct, restoration(x_T, torch.full((3,), T)))
    assert [step.t for step in result.trajectory] == visited
    assert result.trajectory[0].x_t is x_T


@pytest.mark.parametrize("make", [svd, blur])
@pytest.mark.parametrize("cls", [ColdNaiveSampler, ColdImprovedSampler])
def test_oracle_restores_x0(make, cls):
    degradation = make()
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 12, 12, generator=generator) * 2 - 1
    T = degradation.steps
    x_T = degradation.degrade(x0, torch.full((4,), T))
    sampler = cls(degradation=degradation,
                  parameterization=ResidualParameterization(degradation=degradation))
    result = sampler.sample(lambda x, t: x0 - x, x_T, trajectory=True)
    torch.testing.assert_close(result.sample, x0, atol=1e-5, rtol=0)
    if cls is ColdImprovedSampler:  # every Algorithm 2 state is exactly D(x0, s)
        for step in result.trajectory:
            expected = degradation.degrade(x0, torch.full((4,), step.t))
            torch.testing.assert_close(step.x_t, expected, atol=1e-5, rtol=0)


def test_improved_from_partial_start_and_one_decomposition(monkeypatch):
    degradation = svd()
    generator = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 3, 12, 12, generator=generator) * 2 - 1
    x_start = degradation.degrade(x0, torch.full((2,), 7))
    sampler = ColdImprovedSampler(degradation=degradation, parameterization=Direct(
        degradation=degradation))
    calls = []
    decompose = degradation.decompose
    monkeypatch.setattr(degradation, "decompose", lambda x: calls.append(1) or decompose(x))
    result = sampler.sample(lambda x, t: x0, x_start, start=7)
    torch.testing.assert_close(result.sample, x0, atol=1e-5, rtol=0)
    assert len(calls) == 7  # one SVD of x̂0 per step serves D(x̂0, s) and D(x̂0, s − 1)
    with pytest.raises(ValueError, match="start"):
        sampler.timesteps(13)


@pytest.mark.parametrize("steps", [None, 12])
def test_improved_with_gaussian_is_ddim_eta_zero(steps):
    from corediff_plugins.degradations.gaussian import GaussianDegradation
    from corediff_plugins.parameterizations.eps import EpsParameterization
    from corediff_plugins.samplers.ddim import DDIMSampler, DDIMSamplerConfig
    from corediff_plugins.schedules.linear import LinearSchedule, LinearScheduleConfig

    degradation = GaussianDegradation(schedule=LinearSchedule(LinearScheduleConfig(steps=50)))
    parameterization = EpsParameterization(degradation=degradation)
    ddim = DDIMSampler(DDIMSamplerConfig(steps=steps, eta=0.0), degradation=degradation,
                       parameterization=parameterization)
    cold = ColdImprovedSampler(ColdImprovedConfig(steps=steps), degradation=degradation,
                               parameterization=parameterization)
    assert cold.timesteps() == ddim.timesteps()
    generator = torch.Generator().manual_seed(3)
    x_T = torch.randn(3, 2, 8, 8, generator=generator, dtype=torch.float64)

    def eps_model(x, t):
        return torch.tanh(x) * (0.5 + 0.01 * t.view(-1, 1, 1, 1))

    expected = ddim.sample(eps_model, x_T).sample
    torch.testing.assert_close(cold.sample(eps_model, x_T).sample, expected, atol=1e-5, rtol=0)
