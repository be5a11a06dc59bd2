"""Euler in σ-space: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithm 1 without churn and without the second-order correction
(k-diffusion's ``sample_euler``): on x/α = x0 + σ·ε, d = (x/α − x̂0)/σ and
x_{t'}/α' = x/α + (σ' − σ)·d; the state stays the variance-preserving x (x_T ~ N(0, I)) and
the last move (σ' = 0) returns x̂0. Matches diffusers' EulerDiscreteScheduler (whose state is
x/α, the network's input x)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.solvers import GridSolver, SolverGridConfig


class EulerSamplerConfig(SolverGridConfig):
    type: Literal["euler"] = "euler"


class EulerSampler(GridSolver):
    """Euler steps of the probability-flow ODE in σ."""

    Config = EulerSamplerConfig
    multistep = False

    def plan(self, steps: list[float]) -> list[tuple[float, float, float, float]]:
        """Per step (1/α, σ, σ' − σ, α')."""
        n = self.nodes(steps)
        return [(1 / s.alpha, s.sigma, t.sigma - s.sigma, t.alpha)
                for s, t in zip(n, n[1:], strict=False)]

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        inv_alpha, sigma, dt, alpha_next = step.plan
        x0 = denoise(x, step.t).x0
        x_ve = x * inv_alpha
        return (x_ve + dt / sigma * (x_ve - x0)) * alpha_next, x0
