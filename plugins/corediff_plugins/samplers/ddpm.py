"""Ancestral sampling: Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
Algorithm 2: x_s = μ̃(x_t, x̂0) + σ_t·z with the posterior q(x_s | x_t, x0) of eq. 6-7. On a
respaced run the posterior is taken between consecutive kept steps, i.e. with the respaced
β_{t|s} = 1 - ᾱ_t/ᾱ_s (Nichol & Dhariwal 2021, Sec. 4); a learned log variance (their eq. 15)
is re-interpolated between the respaced bounds."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.gaussian import GaussianTables, posterior_coefficients
from corediff.maths.noise import randn
from corediff.maths.timesteps import TimeGridConfig
from corediff_plugins.samplers.base import RespacedSampler


class DDPMSamplerConfig(TimeGridConfig):
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

    def plan(self, steps: list[int]) -> list[list[float]]:
        """Per step (coef_x0, coef_xt, σ, a, b): posterior mean coefficients, the fixed
        standard deviation and the affine map a·log σ²_{t|t-1} + b of a learned log variance
        onto the respaced bounds log β̃_{t|s} .. log β_{t|s}."""
        tables = GaussianTables(self.degradation.schedule.values())
        cpu = torch.device("cpu")
        alpha_bar = tables.table("alpha_bar", cpu)
        t = torch.tensor(steps)
        coef_x0, coef_xt, small, large = posterior_coefficients(
            alpha_bar[t], alpha_bar[torch.tensor(steps[1:] + [0])])
        variance = small if self.config.variance == "fixed_small" else large
        # β̃ is 0 on the last transition (s = 0); clip it to its neighbour's, as improved-diffusion
        low = torch.cat([small[:-1], small[-2:-1] if len(steps) > 1 else large]).log()
        high = large.log()
        one_low = tables.table("log_variance_min", cpu)[t]
        one_high = tables.table("log_variance_max", cpu)[t]
        a = (high - low) / (one_high - one_low)
        b = low - a * one_low
        return torch.stack((coef_x0, coef_xt, variance.sqrt(), a, b), 1).tolist()

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        coef_x0, coef_xt, sigma, a, b = step.plan
        prediction = denoise(x, step.t)
        x0 = prediction.x0.clamp(-1, 1) if self.config.clip_x0 else prediction.x0
        mean = coef_x0 * x0 + coef_xt * x
        if step.is_last:  # the last step (to t = 0) returns the mean
            return mean, x0
        noise = randn(x.shape, step.generator, x.device, x.dtype)
        if prediction.log_variance is not None:
            sigma = torch.exp(0.5 * (a * prediction.log_variance + b))
        return mean + self.config.temperature * sigma * noise, x0
