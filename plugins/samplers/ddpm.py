"""Ancestral sampling: Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
Algorithm 2: x_s = μ̃(x_t, x̂0) + σ_t·z with the posterior q(x_s | x_t, x0) of eq. 6-7. On a
respaced run the posterior is taken between consecutive kept steps, i.e. with the respaced
β_{t|s} = 1 - ᾱ_t/ᾱ_s (Nichol & Dhariwal 2021, Sec. 4); a learned log variance (their eq. 15)
is re-interpolated between the respaced bounds."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import (
    DenoiseFn,
    SampleResult,
    TrajectoryStep,
)
from corediff_plugins._gaussian import (
    GaussianTables,
    RespacedSampler,
    RespacedSamplerConfig,
    posterior_coefficients,
)


class DDPMSamplerConfig(RespacedSamplerConfig):
    type: Literal["ddpm"] = "ddpm"
    variance: Literal["fixed_small", "fixed_large"] = Field(
        "fixed_small",
        description="σ² = β̃ ('fixed_small') or β ('fixed_large'), unless the parameterization "
        "predicts a log variance.",
    )
    temperature: float = Field(1.0, ge=0, description="Scale on the noise added at each step.")


class DDPMSampler(RespacedSampler):
    """Ancestral DDPM sampling on the full or a respaced chain of steps."""

    Config = DDPMSamplerConfig

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.tables = GaussianTables(self.degradation.schedule.values())

    def _plan(self, steps: list[int]) -> list[list[float]]:
        """Per step (coef_x0, coef_xt, σ, a, b): posterior mean coefficients, the fixed
        standard deviation and the affine map a·log σ²_{t|t-1} + b of a learned log variance
        onto the respaced bounds log β̃_{t|s} .. log β_{t|s}."""
        cpu = torch.device("cpu")
        alpha_bar = self.tables.table("alpha_bar", cpu)
        t = torch.tensor(steps)
        coef_x0, coef_xt, small, large = posterior_coefficients(
            alpha_bar[t], alpha_bar[torch.tensor(steps[1:] + [0])])
        variance = small if self.config.variance == "fixed_small" else large
        # β̃ is 0 on the last transition (s = 0); clip it to its neighbour's, as improved-diffusion
        low = torch.cat([small[:-1], small[-2:-1] if len(steps) > 1 else large]).log()
        high = large.log()
        one_low = self.tables.table("log_variance_min", cpu)[t]
        one_high = self.tables.table("log_variance_max", cpu)[t]
        a = (high - low) / (one_high - one_low)
        b = low - a * one_low
        return torch.stack((coef_x0, coef_xt, variance.sqrt(), a, b), 1).tolist()

    @torch.no_grad()
    def sample(
        self,
        model: DenoiseFn,
        x: Tensor,
        *,
        start: int | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
    ) -> SampleResult:
        steps = self.timesteps(start)
        plan = self._plan(steps)
        t_vectors = torch.tensor(steps, device=x.device).repeat_interleave(x.shape[0])
        t_vectors = t_vectors.view(len(steps), x.shape[0])
        temperature, direct, path = self.config.temperature, None, []
        for i, (coef_x0, coef_xt, sigma, a, b) in enumerate(plan):
            t = t_vectors[i]
            prediction = self.parameterization.predict(model(x, t), x, t)
            x0 = prediction.x0.clamp(-1, 1) if self.config.clip_x0 else prediction.x0
            direct = x0 if direct is None else direct
            if trajectory:
                path.append(TrajectoryStep(steps[i], x, x0))
            mean = coef_x0 * x0 + coef_xt * x
            if i == len(plan) - 1:  # the last step (to t = 0) returns the mean
                x = mean
                break
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if prediction.log_variance is not None:
                sigma = torch.exp(0.5 * (a * prediction.log_variance + b))
            x = mean + temperature * sigma * noise
        assert direct is not None
        return SampleResult(sample=x, direct=direct, trajectory=path)
