"""Heun in σ-space: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithm 1 without churn (k-diffusion's ``sample_heun``): on
x/α = x0 + σ·ε, an Euler step with d = (x/α − x̂0)/σ to σ', then the trapezoidal correction
with d' at (x_Euler, σ'); the last move (σ' = 0) is Euler and returns x̂0, so a run of N steps
makes 2N − 1 evaluations. The state stays the variance-preserving x. Matches diffusers'
HeunDiscreteScheduler."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.solvers import GridSolver, SolverGridConfig


class HeunSamplerConfig(SolverGridConfig):
    type: Literal["heun"] = "heun"


class HeunSampler(GridSolver):
    """Heun (trapezoidal) steps of the probability-flow ODE in σ."""

    Config = HeunSamplerConfig
    multistep = False
    evaluations_per_step = 2

    def nfe(self, start: int | float | None = None) -> int:
        return 2 * len(self.timesteps(start)) - 1

    def plan(self, steps: list[float]) -> list[tuple[float, float, float, float, float]]:
        """Per step (1/α, σ, σ' − σ, α', σ')."""
        n = self.nodes(steps)
        return [(1 / s.alpha, s.sigma, t.sigma - s.sigma, t.alpha, t.sigma)
                for s, t in zip(n, n[1:], strict=False)]

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        inv_alpha, sigma, dt, alpha_next, sigma_next = step.plan
        x0 = denoise(x, step.t).x0
        x_ve = x * inv_alpha
        d = (x_ve - x0) / sigma
        euler = x_ve + dt * d
        if step.is_last:
            return euler * alpha_next, x0
        d_next = (euler - denoise(euler * alpha_next, step.t_next).x0) / sigma_next
        return (x_ve + dt / 2 * (d + d_next)) * alpha_next, x0
