"""UniPC: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
of Diffusion Models", §3 (UniP-2 and UniC-2, data prediction, B(h) = e^{h} − 1: the "bh2"
variant). With λ = log(α/σ), h = λ_t − λ_s, r = (λ_prev − λ_s)/h and
D = (x̂0_prev − x̂0_s)/r, the predictor is x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x̂0_s
− α_t·B(h)·½·D (first order on the first and last steps); once x̂0_t is evaluated at the
predicted x_t, the corrector recomputes x_t from x_s with x̂0_t − x̂0_s as a further
difference, ρ from the order conditions R·ρ = b (no extra evaluation; the final step has
none). Matches diffusers' UniPCMultistepScheduler (solver_type "bh2", solver_order 2,
predict_x0).

Written in λ, α and σ of the Gaussian family (:mod:`corediff.maths.family`), so it drives VP,
flow-matching and EDM models alike.

On flow's grid with shift = 2 (ending at a fixed t ≈ 0.004, its last λ-step shrinks like log N)
order 2 is reached late, as in diffusers, which gives the same errors on the same x_T: on
Gaussian data with the exact denoiser 1.22, 1.08, 0.49, 0.13, 0.025 data std at N = 10, 20, 40,
80, 160 (tests/test_conformance.py checks it at N = 40, 80, 160)."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.solvers import GridSolver, Node, SolverGridConfig


class UniPCSamplerConfig(SolverGridConfig):
    type: Literal["unipc"] = "unipc"


def _update(s: Node, t: Node, prev: Node | None, corrector: bool) -> tuple[float, ...]:
    """(a, c_s, c_prev, c_t): x_t = a·x_s + c_s·x̂0_s + c_prev·x̂0_prev + c_t·x̂0_t for UniP
    (``corrector`` False, c_t = 0) or UniC, of order 2 with ``prev`` and 1 without."""
    h = t.lam - s.lam
    b_h = math.expm1(-h)  # B(h) of the data-prediction form (−h), and h·φ_1
    a, c_s, c_prev, c_t = t.sigma_vp / s.sigma_vp, -t.alpha * b_h, 0.0, 0.0
    if prev is None and corrector:
        rho_prev, rho_t = 0.0, 0.5
    elif prev is None:
        return a, c_s, c_prev, c_t
    else:
        r = (prev.lam - s.lam) / h
        phi = b_h / -h - 1
        b1, b2 = phi / b_h, 2 * (phi / -h - 0.5) / b_h
        rho_prev = (b1 - b2) / (1 - r) if corrector else 0.5
        rho_t = b1 - rho_prev if corrector else 0.0
        c_prev = -t.alpha * b_h * rho_prev / r
    c_t = -t.alpha * b_h * rho_t
    return a, c_s - c_prev - c_t, c_prev, c_t


class UniPCSampler(GridSolver):
    """UniPC-2 (bh2) predictor-corrector on the schedule's or Karras's σ grid."""

    Config = UniPCSamplerConfig
    order = 2

    def plan(self, steps: list[float]) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
        """Per step i (predictor i → i+1, corrector of x_i from step i − 1; () at i = 0)."""
        n = self.nodes(steps)
        rows = []
        for i in range(len(steps)):
            first_or_last = i == 0 or i == len(steps) - 1
            predictor = _update(n[i], n[i + 1], None if first_or_last else n[i - 1], False)
            corrector = () if i == 0 else _update(n[i - 1], n[i], n[i - 2] if i > 1 else None,
                                                   True)
            rows.append((predictor, corrector))
        return rows

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        predictor, corrector = step.plan
        x0 = denoise(x, step.t).x0
        state = step.state
        if corrector:
            a, c_s, c_prev, c_t = corrector
            x = a * state["x"] + c_s * state["x0"] + c_t * x0
            if c_prev:
                x = x + c_prev * state["x0_prev"]
        a, c_s, c_prev, _ = predictor
        x_next = a * x + c_s * x0
        if c_prev:
            x_next = x_next + c_prev * state["x0"]
        state.update(x=x, x0=x0, x0_prev=state.get("x0"))
        return x_next, x0
