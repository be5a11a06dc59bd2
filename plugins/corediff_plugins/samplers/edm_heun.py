"""EDM stochastic sampler: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithm 2 (with σ(t) = t, s(t) = 1) on the ρ-grid of eq. 5: at each σ_i,
γ_i = min(S_churn/N, √2 − 1) if S_tmin ≤ σ_i ≤ S_tmax else 0, σ̂ = (1 + γ_i)·σ_i,
x̂ = x_i + sqrt(σ̂² − σ_i²)·S_noise·ε; an Euler step from σ̂ to σ_{i+1}, then Heun's
2nd-order correction unless σ_{i+1} = 0. S_churn = 0 is the deterministic Heun solver
(Algorithm 1)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat
from torch import Tensor

from corediff.maths.edm import KarrasGridConfig, sampler_sigmas
from corediff.interfaces import Denoise, Sampler, Step
from corediff.maths.noise import randn


class EDMHeunSamplerConfig(KarrasGridConfig):
    type: Literal["edm_heun"] = "edm_heun"
    S_churn: NonNegativeFloat = Field(0.0, description="Total stochasticity (0: the ODE).")
    S_tmin: NonNegativeFloat = Field(0.0, description="Lowest σ_i that gets churn.")
    S_tmax: NonNegativeFloat | None = Field(
        None, description="Highest σ_i that gets churn (None: no bound, the paper's ∞).")
    S_noise: PositiveFloat = Field(1.0, description="Scale of the churn noise ε.")


class EDMHeunSampler(Sampler):
    """Heun's 2nd-order method with stochastic churn (2 evaluations a step, 1 on the last)."""

    Config = EDMHeunSamplerConfig
    requires = {"degradation": frozenset({"sigma_time"})}
    evaluations_per_step = 2

    def timesteps(self, start: int | float | None = None) -> list[float]:
        return sampler_sigmas(self.config, self.degradation, start)

    def nfe(self, start: int | float | None = None) -> int:
        return 2 * len(self.timesteps(start)) - 1

    def plan(self, steps: list[float]) -> list[tuple[float, float]]:
        """Per step (sqrt(σ̂² − σ_i²)·S_noise, σ̂)."""
        cfg = self.config
        s_tmax = math.inf if cfg.S_tmax is None else cfg.S_tmax
        plans = []
        for sigma in steps:
            churn = cfg.S_tmin <= sigma <= s_tmax
            gamma = min(cfg.S_churn / cfg.steps, math.sqrt(2) - 1) if churn else 0.0
            sigma_hat = sigma * (1 + gamma)
            plans.append((math.sqrt(sigma_hat**2 - sigma**2) * cfg.S_noise, sigma_hat))
        return plans

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        noise_std, sigma_hat = step.plan
        if noise_std > 0:
            x = x + noise_std * randn(x.shape, step.generator, x.device, x.dtype)
        x0 = denoise(x, sigma_hat).x0
        d = (x - x0) / sigma_hat
        x_next = x + (step.t_next - sigma_hat) * d
        if step.t_next > 0:
            d_next = (x_next - denoise(x_next, step.t_next).x0) / step.t_next
            x_next = x + (step.t_next - sigma_hat) * 0.5 * (d + d_next)
        return x_next, x0
