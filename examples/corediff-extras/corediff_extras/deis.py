"""DEIS: Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"
(ICLR 2023), §4: ρAB-DEIS, order 1 or 2, with the log-ρ interpolation of diffusers'
DEISMultistepScheduler (algorithm_type="deis", solver_type="logrho").

The probability-flow ODE of a VP diffusion in the variable ρ = σ/α is

    d(x/α)/dρ = ε_θ(x, ρ),   so   x_n/α_n = x_i/α_i + ∫_{ρ_i}^{ρ_n} ε_θ dρ      (exact),

and ρAB-DEIS approximates ε_θ on [ρ_n, ρ_i] by the polynomial through the current and previous
ε̂ (Adams–Bashforth in ρ). This is the "logrho" variant of diffusers' DEISMultistepScheduler:
the polynomial is linear in log ρ. With order 2, current step i and previous step i−1,

    ε(ρ) ≈ ε̂_i·ℓ(ρ; ρ_i, ρ_{i−1}) + ε̂_{i−1}·ℓ(ρ; ρ_{i−1}, ρ_i),
    ℓ(ρ; b, c) = (ln ρ − ln c)/(ln b − ln c),
    ∫ ℓ(ρ; b, c) dρ = F(ρ; b, c) = ρ·(ln ρ − ln c − 1)/(ln b − ln c),

    x_n = α_n·(x_i/α_i + C_cur·ε̂_i + C_prev·ε̂_{i−1}),
    C_cur  = F(ρ_n; ρ_i, ρ_{i−1}) − F(ρ_i; ρ_i, ρ_{i−1}),
    C_prev = F(ρ_n; ρ_{i−1}, ρ_i) − F(ρ_i; ρ_{i−1}, ρ_i).

Order 1 (and the first step, which has no history) is the exponential-integrator Euler step
x_n = α_n·(x_i/α_i + (ρ_n − ρ_i)·ε̂_i), i.e. DDIM with η = 0.

Written with x_i/α_i = x̂0 + ρ_i·ε̂_i, the update is x_n = α_n·(x̂0 + (ρ_i + C_cur)·ε̂_i +
C_prev·ε̂_{i−1}): identical for a consistent prediction, and it also honours a prediction whose
x̂0 and ε̂ differ on purpose (CFG++ guides x̂0 and renoises with the unconditional ε̂) or a
clamped x̂0 (``clip_x0``: ε̂ is then recomputed from x_i and the clamped x̂0, as DDIM does), and
stays finite at ᾱ = 0 (ρ = ∞) for parameterizations that are (v-prediction).

Convention (corediff): steps t ∈ {1..T}, our step t is diffusers' timestep t − 1, ᾱ_0 = 1 and
the last step goes to t = 0 (ρ = 0, F(0; ·) = 0), returning x̂0 when it is first order.
It reproduces ``DEISMultistepScheduler(algorithm_type="deis", solver_type="logrho",
solver_order=order, lower_order_final=lower_order_final, timestep_spacing="trailing")``
with our ``spacing="trailing"`` (the default), provided diffusers' last sigma (its ᾱ at its
timestep 0, our t = 1) is replaced by 0 — DEIS in diffusers has no ``final_sigmas_type="zero"``
and its formulas give 0·∞ there, so the comparison test uses a vanishing sigma instead.
diffusers' DEIS "linspace" / "leading" grids differ from corediff's (DDIM's) grids of those
names; every spacing of :func:`corediff.maths.timesteps.time_grid` is accepted here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Denoise, Sampler, Step
from corediff.maths.timesteps import TimeGridConfig, time_grid

#: diffusers' rule for ``lower_order_final``: only runs of fewer than this many steps.
LOWER_ORDER_FINAL_BELOW = 15


class DEISSamplerConfig(TimeGridConfig):
    type: Literal["deis"] = "deis"
    order: Literal[1, 2] = Field(
        2, description="Multistep order: 1 is DDIM (η = 0), 2 is ρAB-DEIS with log-ρ "
        "interpolation through the previous ε̂."
    )
    lower_order_final: bool = Field(
        True, description="First-order last step when the run visits fewer than 15 steps "
        "(diffusers' lower_order_final)."
    )


def antiderivative(rho: float, b: float, c: float) -> float:
    """F(ρ; b, c) = ρ·(ln ρ − ln c − 1)/(ln b − ln c), the primitive in ρ of the log-linear
    Lagrange basis that is 1 at b and 0 at c; F(0; b, c) = 0 (ρ ln ρ → 0)."""
    if rho == 0.0:
        return 0.0
    return rho * (math.log(rho) - math.log(c) - 1.0) / (math.log(b) - math.log(c))


def ab2_coefficients(rho_next: float, rho_cur: float, rho_prev: float) -> tuple[float, float]:
    """(C_cur, C_prev): ∫_{ρ_cur}^{ρ_next} of the Lagrange basis of ε̂_cur and of ε̂_prev."""
    c_cur = antiderivative(rho_next, rho_cur, rho_prev) - antiderivative(rho_cur, rho_cur, rho_prev)
    c_prev = antiderivative(rho_next, rho_prev, rho_cur) - antiderivative(rho_cur, rho_prev,
                                                                          rho_cur)
    return c_cur, c_prev


class DEISSampler(Sampler):
    """Deterministic multistep DEIS (ρAB, log-ρ) on a respaced grid of steps."""

    Config = DEISSamplerConfig
    requires = {"degradation": frozenset({"gaussian"})}

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.timesteps()  # refuse a grid the schedule cannot give when the sampler is built

    def timesteps(self, start: int | None = None) -> list[int]:
        cfg = self.config
        return time_grid(self.degradation.steps, cfg.steps, cfg.spacing, start)

    def second_order(self, index: int, count: int) -> bool:
        """Whether visited step ``index`` of ``count`` uses the previous ε̂."""
        if self.config.order == 1 or index == 0:
            return False
        final = index == count - 1
        return not (final and self.config.lower_order_final and count < LOWER_ORDER_FINAL_BELOW)

    def plan(self, steps: list[int]) -> list[list[float]]:
        """Per step (α_n, A, B, sqrt(ᾱ_t), 1/sqrt(1 − ᾱ_t)) with
        x_n = α_n·(x̂0 + A·ε̂_t + B·ε̂_prev), in float64."""
        alpha_bar = self.degradation.schedule.values().double().tolist()

        def rho(t: int) -> float:  # σ/α; inf at ᾱ = 0, 0 at t = 0
            return math.inf if alpha_bar[t] == 0 else math.sqrt((1 - alpha_bar[t]) / alpha_bar[t])

        rows = []
        targets = steps[1:] + [0]
        for i, (t, n) in enumerate(zip(steps, targets, strict=True)):
            rho_t, rho_n = rho(t), rho(n)
            a, b = rho_n, 0.0  # first order: x_n = α_n·(x̂0 + ρ_n·ε̂)
            if self.second_order(i, len(steps)):
                rho_prev = rho(steps[i - 1])
                if math.isfinite(rho_prev):  # ρ_prev = ∞: the log-ρ basis degenerates to order 1
                    c_cur, c_prev = ab2_coefficients(rho_n, rho_t, rho_prev)
                    a, b = rho_t + c_cur, c_prev
            one_minus = 1 - alpha_bar[t]
            rows.append([math.sqrt(alpha_bar[n]), a, b, math.sqrt(alpha_bar[t]),
                         1 / math.sqrt(one_minus) if one_minus > 0 else 0.0])
        return rows

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        alpha_next, a, b, sqrt_alpha_bar, inv_sqrt_one_minus = step.plan
        prediction = denoise(x, step.t)
        x0, eps = prediction.x0, prediction.eps
        if self.config.clip_x0 or eps is None:
            x0 = x0.clamp(-1, 1) if self.config.clip_x0 else x0
            eps = (x - sqrt_alpha_bar * x0) * inv_sqrt_one_minus
        direction = a * eps
        if b != 0.0:
            direction = direction + b * step.state["eps"]
        step.state["eps"] = eps
        return alpha_next * (x0 + direction), x0
