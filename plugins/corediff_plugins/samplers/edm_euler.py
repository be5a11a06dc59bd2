"""EDM Euler sampler: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", eq. 1 with s(t) = 1, σ(t) = t (the probability-flow ODE
dx/dσ = (x − D(x; σ))/σ) and eq. 5 (the ρ-grid σ_0 = σ_max > … > σ_{N−1} = σ_min, σ_N = 0),
solved with Euler steps: x_{i+1} = x_i + (σ_{i+1} − σ_i)·(x_i − D(x_i; σ_i))/σ_i
(diffusers' EDMEulerScheduler with s_churn = 0)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.maths.edm import KarrasGridConfig, sampler_sigmas
from corediff.interfaces import Denoise, Sampler, Step


class EDMEulerSamplerConfig(KarrasGridConfig):
    type: Literal["edm_euler"] = "edm_euler"


class EDMEulerSampler(Sampler):
    """First-order Euler steps of the probability-flow ODE over the Karras grid."""

    Config = EDMEulerSamplerConfig
    requires = {"degradation": frozenset({"sigma_time"})}

    def timesteps(self, start: int | float | None = None) -> list[float]:
        return sampler_sigmas(self.config, self.degradation, start)

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        x0 = denoise(x, step.t).x0
        return x + (step.t_next - step.t) / step.t * (x - x0), x0
