"""DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16:
x_s = sqrt(ᾱ_s)·x̂0 + sqrt(1 - ᾱ_s - σ²)·ε̂ + σ·z, σ = η·sqrt((1 - ᾱ_s)/(1 - ᾱ_t))·
sqrt(1 - ᾱ_t/ᾱ_s); deterministic at η = 0, the respaced DDPM posterior at η = 1."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.maths.gaussian import posterior_coefficients
from corediff.interfaces import Denoise, Step
from corediff.maths.noise import randn
from corediff.maths.timesteps import TimeGridConfig
from corediff_plugins.samplers.base import RespacedSampler


class DDIMSamplerConfig(TimeGridConfig):
    type: Literal["ddim"] = "ddim"
    eta: float = Field(0.0, ge=0, description="η: 0 is deterministic DDIM, 1 the DDPM posterior.")


class DDIMSampler(RespacedSampler):
    """DDIM sampling on a respaced chain of steps."""

    Config = DDIMSamplerConfig

    def plan(self, steps: list[int]) -> list[list[float]]:
        """Per step (sqrt(ᾱ_s), sqrt(1 - ᾱ_s - σ²), σ, sqrt(ᾱ_t), 1/sqrt(1 - ᾱ_t))."""
        alpha_bar = self.degradation.schedule.values().double()
        alpha_bar_t = alpha_bar[torch.tensor(steps)]
        alpha_bar_s = alpha_bar[torch.tensor(steps[1:] + [0])]
        sigma = self.config.eta * posterior_coefficients(alpha_bar_t, alpha_bar_s)[2].sqrt()
        direction = (1 - alpha_bar_s - sigma.square()).clamp_min(0).sqrt()
        columns = (alpha_bar_s.sqrt(), direction, sigma, alpha_bar_t.sqrt(),
                   (1 - alpha_bar_t).rsqrt())
        return torch.stack(columns, 1).tolist()

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        sqrt_alpha_bar_s, direction, sigma, sqrt_alpha_bar_t, inv_sqrt_one_minus = step.plan
        prediction = denoise(x, step.t)
        x0, eps = prediction.x0, prediction.eps
        if self.config.clip_x0 or eps is None:
            x0 = x0.clamp(-1, 1) if self.config.clip_x0 else x0
            eps = (x - sqrt_alpha_bar_t * x0) * inv_sqrt_one_minus
        x_next = sqrt_alpha_bar_s * x0 + direction * eps
        if sigma > 0:
            x_next = x_next + sigma * randn(x.shape, step.generator, x.device, x.dtype)
        return x_next, x0
