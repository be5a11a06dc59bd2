"""DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16:
x_s = sqrt(ᾱ_s)·x̂0 + sqrt(1 - ᾱ_s - σ²)·ε̂ + σ·z, σ = η·sqrt((1 - ᾱ_s)/(1 - ᾱ_t))·
sqrt(1 - ᾱ_t/ᾱ_s); deterministic at η = 0, the respaced DDPM posterior at η = 1."""

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
    RespacedSampler,
    RespacedSamplerConfig,
    posterior_coefficients,
)


class DDIMSamplerConfig(RespacedSamplerConfig):
    type: Literal["ddim"] = "ddim"
    eta: float = Field(0.0, ge=0, description="η: 0 is deterministic DDIM, 1 the DDPM posterior.")


class DDIMSampler(RespacedSampler):
    """DDIM sampling on a respaced chain of steps."""

    Config = DDIMSamplerConfig

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.alpha_bar = self.degradation.schedule.values().double()

    def _plan(self, steps: list[int]) -> list[list[float]]:
        """Per step (sqrt(ᾱ_s), sqrt(1 - ᾱ_s - σ²), σ, sqrt(ᾱ_t), 1/sqrt(1 - ᾱ_t))."""
        alpha_bar_t = self.alpha_bar[torch.tensor(steps)]
        alpha_bar_s = self.alpha_bar[torch.tensor(steps[1:] + [0])]
        sigma = self.config.eta * posterior_coefficients(alpha_bar_t, alpha_bar_s)[2].sqrt()
        direction = (1 - alpha_bar_s - sigma.square()).clamp_min(0).sqrt()
        columns = (alpha_bar_s.sqrt(), direction, sigma, alpha_bar_t.sqrt(),
                   (1 - alpha_bar_t).rsqrt())
        return torch.stack(columns, 1).tolist()

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
        t_vectors = torch.tensor(steps, device=x.device).repeat_interleave(x.shape[0])
        t_vectors = t_vectors.view(len(steps), x.shape[0])
        direct, path = None, []
        for i, row in enumerate(self._plan(steps)):
            sqrt_alpha_bar_s, direction, sigma, sqrt_alpha_bar_t, inv_sqrt_one_minus = row
            t = t_vectors[i]
            prediction = self.parameterization.predict(model(x, t), x, t)
            x0, eps = prediction.x0, prediction.eps
            if self.config.clip_x0 or eps is None:
                x0 = x0.clamp(-1, 1) if self.config.clip_x0 else x0
                eps = (x - sqrt_alpha_bar_t * x0) * inv_sqrt_one_minus
            direct = x0 if direct is None else direct
            if trajectory:
                path.append(TrajectoryStep(steps[i], x, x0))
            x_next = sqrt_alpha_bar_s * x0 + direction * eps
            if sigma > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x_next = x_next + sigma * noise
            x = x_next
        assert direct is not None
        return SampleResult(sample=x, direct=direct, trajectory=path)
