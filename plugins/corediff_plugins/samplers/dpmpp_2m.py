"""DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Algorithm 2 (multistep second order, data prediction): with
λ = log(α/σ), h = λ_t − λ_s, r = h_prev / h and D = (1 + 1/(2r))·x̂0_s − 1/(2r)·x̂0_prev,
x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·D; the first step and the last (to σ = 0) are first
order (D = x̂0_s, DDIM). ``sde``: DPM-Solver++(2M) SDE, the same multistep scheme on the
reverse SDE (diffusers' "sde-dpmsolver++", midpoint):
x_t = (σ_t/σ_s)·e^{−h}·x_s + α_t·(1 − e^{−2h})·D + σ_t·sqrt(1 − e^{−2h})·z. Matches diffusers'
DPMSolverMultistepScheduler (solver_order 2, final σ = 0, where lower_order_final never
changes an order-2 run).

Written in λ, α and σ of the Gaussian family (:mod:`corediff.maths.family`), so it drives VP,
flow-matching and EDM models alike (a step from α = 0, λ = −∞, is first order). ``dpmpp_2m_sde``
is the preset with ``sde = true``.

Order 2 is reached late on two grids (as in diffusers, which gives the same errors on the same
x_T; tests/test_conformance.py checks them at N = 40, 80, 160): on Gaussian data with the exact
denoiser, the Karras grid on the linear VP schedule (T = 1000) has λ-steps up to 2.0, 1.0, 0.51
at N = 10, 20, 40 and errors 0.147, 0.157, 0.038, 0.0070, 0.0012 data std at N = 10 ... 160;
flow's grid with shift = 2 ends at a fixed t ≈ 0.004, so its last λ-step shrinks like log N
(4.2, 3.4, 2.7, 2.0 at N = 10 ... 80) and the errors are 1.18, 1.04, 0.50, 0.15, 0.036."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.noise import randn
from corediff.maths.solvers import GridSolver, SolverGridConfig


class DPMSolverPP2MSamplerConfig(SolverGridConfig):
    type: Literal["dpmpp_2m"] = "dpmpp_2m"
    sde: bool = Field(False, description="DPM-Solver++(2M) SDE (stochastic) instead of the ODE.")


class DPMSolverPP2MSampler(GridSolver):
    """DPM-Solver++(2M), ODE or SDE, on the schedule's or Karras's σ grid."""

    Config = DPMSolverPP2MSamplerConfig
    order = 2

    def plan(self, steps: list[float]) -> list[tuple[float, float, float, float]]:
        """Per step (a, c_s, c_prev, g): x_t = a·x_s + c_s·x̂0_s + c_prev·x̂0_prev + g·z."""
        n = self.nodes(steps)
        sde = self.config.sde
        rows = []
        for i, (s, t) in enumerate(zip(n, n[1:], strict=False)):
            h = t.lam - s.lam
            decay = math.exp(-h) if sde else 1.0
            c = -t.alpha * math.expm1(-2 * h if sde else -h)
            g = t.sigma_vp * math.sqrt(-math.expm1(-2 * h)) if sde else 0.0
            half_over_r = 0.0 if i == 0 or t.t == 0 else 0.5 * h / (s.lam - n[i - 1].lam)
            rows.append((t.sigma_vp / s.sigma_vp * decay, c * (1 + half_over_r),
                         -c * half_over_r, g))
        return rows

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        a, c_s, c_prev, g = step.plan
        x0 = denoise(x, step.t).x0
        x_next = a * x + c_s * x0
        if c_prev:
            x_next = x_next + c_prev * step.state["x0"]
        if g:
            x_next = x_next + g * randn(x.shape, step.generator, x.device, x.dtype)
        step.state["x0"] = x0
        return x_next, x0


class DPMSolverPP2MSDESamplerConfig(DPMSolverPP2MSamplerConfig):
    type: Literal["dpmpp_2m_sde"] = "dpmpp_2m_sde"
    sde: bool = Field(True, description="DPM-Solver++(2M) SDE (stochastic) instead of the ODE.")


class DPMSolverPP2MSDESampler(DPMSolverPP2MSampler):
    """DPM-Solver++(2M) SDE: the ``dpmpp_2m`` preset with ``sde = true`` (stochastic)."""

    Config = DPMSolverPP2MSDESamplerConfig
    order = None
    stochastic = True
