"""Heun with churn on the probability-flow ODE of any member of the Gaussian family: Karras
et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 2
(k-diffusion's ``sample_heun``; S_churn = 0 is Algorithm 1).

At each visited time t_i, with Karras's noise level σ_i = σ/α: γ_i = min(S_churn/N, √2 − 1)
if S_tmin ≤ σ_i ≤ S_tmax (and σ_i finite) else 0, σ̂ = (1 + γ_i)·σ_i (at most the member's
largest σ/α), t̂ = t(σ̂), and x̂/α̂ = x/α + sqrt(σ̂² − σ_i²)·S_noise·z; then an Euler step from
t̂ to t_{i+1} and the trapezoidal correction with the derivative at (x_Euler, t_{i+1}), unless
t_{i+1} = 0 (the last move is Euler), so a run of N steps makes 2N − 1 evaluations. The ODE is
integrated in ``variable`` (see :mod:`corediff_plugins.samplers.euler`): "sigma" (y = x/α over
σ/α: diffusers' HeunDiscreteScheduler, EDM's Algorithm 2) or "flow" (y = x/(α + σ) over
σ/(α + σ): diffusers' FlowMatchHeunDiscreteScheduler). A step from α = 0 in the σ variable
(σ/α = ∞) is its Euler limit (DDIM) with one evaluation.

Presets: ``edm_heun`` (EDM's Karras grid, 18 steps) and ``flow_heun`` (flow's grid, the flow
variable) are this sampler; their samples are those of the former separate samplers
(tests/test_pinned_solvers.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat
from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.noise import randn
from corediff.maths.solvers import GridSolver, SolverGridConfig, Variable
from corediff_plugins.samplers.euler import derivative, euler_row


class HeunSamplerConfig(SolverGridConfig):
    type: Literal["heun"] = "heun"
    variable: Variable = Field(
        "sigma", description="ODE variable: 'sigma' (x/α over σ/α, Karras) or 'flow' "
        "(x/(α + σ) over σ/(α + σ), rectified flow).")
    S_churn: NonNegativeFloat = Field(0.0, description="Total stochasticity (0: the ODE).")
    S_tmin: NonNegativeFloat = Field(0.0, description="Lowest σ/α that gets churn.")
    S_tmax: NonNegativeFloat | None = Field(
        None, description="Highest σ/α that gets churn (None: no bound, the paper's ∞).")
    S_noise: PositiveFloat = Field(1.0, description="Scale of the churn noise z.")


class HeunSampler(GridSolver):
    """Heun (trapezoidal) steps of the probability-flow ODE, with Karras's churn."""

    Config = HeunSamplerConfig
    multistep = False
    evaluations_per_step = 2
    order = 2

    def nfe(self, start: int | float | None = None) -> int:
        rows = self.plan(self.timesteps(start))
        return sum(1 if row[4] == "limit" or i == len(rows) - 1 else 2
                   for i, row in enumerate(rows))

    def _churned(self, node) -> tuple[float, float, float, object]:
        """(noise std in x/α units, 1/α, t̂, the node at t̂) of a visited node."""
        cfg = self.config
        s_tmax = math.inf if cfg.S_tmax is None else cfg.S_tmax
        level = node.sigma
        churn = cfg.S_churn > 0 and math.isfinite(level) and cfg.S_tmin <= level <= s_tmax
        if not churn:
            return 0.0, 1.0, node.t, node
        gamma = min(cfg.S_churn / cfg.steps, math.sqrt(2) - 1)
        level_hat = min(level * (1 + gamma), self._largest_level())
        t_hat = float(self.degradation.t_from_sigma(torch.tensor([level_hat],
                                                                 dtype=torch.float64))[0])
        hat = self.nodes([t_hat])[0]
        std = math.sqrt(max(hat.sigma**2 - level**2, 0.0)) * cfg.S_noise
        return std, 1 / node.alpha, t_hat, hat

    def _largest_level(self) -> float:
        t = torch.tensor([float(self.degradation.t_max)], dtype=torch.float64)
        top = float(self.degradation.noise_level(t)[0])
        return math.inf if not self.degradation.integer_steps else top

    def plan(self, steps: list[float]) -> list[tuple]:
        """Per step (churn std, 1/α, α̂, t̂, Euler row from t̂ (see euler_row), u')."""
        n = self.nodes(steps)
        variable = self.config.variable
        rows = []
        for s, t in zip(n, n[1:], strict=False):
            std, inv_alpha, t_hat, hat = self._churned(s)
            kind, *euler = euler_row(hat, t, variable)
            u_next = t.sigma if variable == "sigma" else t.sigma_vp / (t.alpha + t.sigma_vp)
            rows.append((std, inv_alpha, hat.alpha, t_hat, kind, tuple(euler), u_next))
        return rows

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        std, inv_alpha, alpha_hat, t_hat, kind, euler, u_next = step.plan
        if std > 0:
            x = (x * inv_alpha + std * randn(x.shape, step.generator, x.device, x.dtype))
            x = x * alpha_hat
        prediction = denoise(x, t_hat)
        x0 = prediction.x0
        if kind == "limit":
            ratio, alpha_next = euler
            return ratio * x + alpha_next * x0, x0
        variable = self.config.variable
        inv_c, u, du, c_next = euler
        y = x * inv_c
        d = derivative(y, prediction, u, variable)
        y_euler = y + du * d
        if step.is_last:
            return y_euler * c_next, x0
        after = denoise(y_euler * c_next, step.t_next)
        d_next = derivative(y_euler, after, u_next, variable)
        return (y + du / 2 * (d + d_next)) * c_next, x0
