"""DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16:
x_s = sqrt(ᾱ_s)·x̂0 + sqrt(1 - ᾱ_s - σ²)·ε̂ + σ·z, σ = η·sqrt((1 - ᾱ_s)/(1 - ᾱ_t))·
sqrt(1 - ᾱ_t/ᾱ_s); deterministic at η = 0, the respaced DDPM posterior at η = 1.

On any member of the Gaussian family (:mod:`corediff.maths.family`) the same step reads
x_s = α_s·x̂0 + sqrt(σ_s² − σ_η²)·ε̂ + σ_η·z with σ_η = η·σ_s·sqrt(1 − e^{−2(λ_s − λ_t)}); a VP
schedule keeps the ᾱ-table arithmetic above on its integer grid (samples unchanged), a
continuous member (flow, EDM) visits its own grid (:func:`corediff.maths.solvers.family_steps`:
flow's with its shift 1, EDM's Karras grid) of ``steps`` times (None: the schedule's steps),
``spacing`` left at its default."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.gaussian import posterior_coefficients
from corediff.maths.noise import randn
from corediff.maths.solvers import SolverGridConfig, family_steps, grid_problems, nodes
from corediff.maths.timesteps import TimeGridConfig
from corediff_plugins.samplers.base import RespacedSampler


class DDIMSamplerConfig(TimeGridConfig):
    type: Literal["ddim"] = "ddim"
    eta: float = Field(0.0, ge=0, description="η: 0 is deterministic DDIM, 1 the DDPM posterior.")


class DDIMSampler(RespacedSampler):
    """DDIM sampling on a respaced chain of steps."""

    Config = DDIMSamplerConfig
    requires = {"degradation": frozenset({"gaussian_family"})}
    order = 1

    @classmethod
    def check_recipe(cls, config, others):  # noqa: ANN001, ANN206 - as Component's
        return grid_problems(cls, config, others)

    def timesteps(self, start: int | float | None = None) -> list[int] | list[float]:
        if self.degradation.integer_steps:
            return super().timesteps(start)
        if self.config.spacing != type(self.config).model_fields["spacing"].default:
            raise ValueError(f"spacing = '{self.config.spacing}' picks steps of a discrete "
                             f"schedule; '{self.degradation.config.type}' has continuous times")
        count = self.config.steps or self.degradation.steps
        grid = SolverGridConfig(type="ddim", steps=count)
        return family_steps(self.degradation, grid, multistep=False, start=start)

    def plan(self, steps: list[int] | list[float]) -> list[list[float]]:
        """Per step (α_s, sqrt(σ_s² − σ_η²), σ_η, α_t, 1/σ_t) (VP: of the ᾱ table)."""
        if not self.degradation.integer_steps:
            return self._family_plan(steps)
        alpha_bar = self.degradation.schedule.values().double()
        alpha_bar_t = alpha_bar[torch.tensor(steps)]
        alpha_bar_s = alpha_bar[torch.tensor(steps[1:] + [0])]
        sigma = self.config.eta * posterior_coefficients(alpha_bar_t, alpha_bar_s)[2].sqrt()
        direction = (1 - alpha_bar_s - sigma.square()).clamp_min(0).sqrt()
        columns = (alpha_bar_s.sqrt(), direction, sigma, alpha_bar_t.sqrt(),
                   (1 - alpha_bar_t).rsqrt())
        return torch.stack(columns, 1).tolist()

    def _family_plan(self, steps: list[float]) -> list[list[float]]:
        n = nodes(steps, self.degradation)
        rows = []
        for t, s in zip(n, n[1:], strict=False):
            sigma = self.config.eta * s.sigma_vp * math.sqrt(-math.expm1(-2 * (s.lam - t.lam)))
            direction = math.sqrt(max(s.sigma_vp**2 - sigma**2, 0.0))
            rows.append([s.alpha, direction, sigma, t.alpha, 1 / t.sigma_vp])
        return rows

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
