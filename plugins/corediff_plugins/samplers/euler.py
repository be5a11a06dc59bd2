"""Euler on the probability-flow ODE of any member of the Gaussian family (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 1 without churn
and without the second-order correction; k-diffusion's ``sample_euler``).

The ODE is integrated in one of two variables (:data:`corediff.maths.solvers.Variable`), the
state y = x/c over u with dy/du = (y − x̂0)/u:

* ``variable = "sigma"`` (default): y = x/α over u = σ/α, Karras's σ (diffusers'
  EulerDiscreteScheduler, EDM's Euler); x_{t'} = α'·(y + (u' − u)·(y − x̂0)/u). Where α = 0
  (σ/α = ∞: a zero-terminal-SNR schedule's T, flow's t = 1) the step is its limit, DDIM's
  x_{t'} = (σ'/σ)·x + α'·x̂0.
* ``variable = "flow"``: y = x/(α + σ) over u = σ/(α + σ) (rectified flow's own x over t:
  diffusers' FlowMatchEulerDiscreteScheduler), dy/du = ε̂ − x̂0 (the prediction's ε̂ when it
  has one, as ``corediff.maths.flow.velocity_of``).

Both make x_t affine in u for fixed (x0, ε), so each step equals DDIM's (first order); they
differ only in rounding. The last move (to t = 0) returns x̂0 up to rounding.

Presets: ``edm_euler`` (the Karras grid of an EDM schedule, 18 steps) and ``flow_euler``
(flow's grid with SD3's shift, the flow variable) are this sampler; their samples are those of
the former separate samplers bit for bit (tests/test_pinned_solvers.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.interfaces import Denoise, Step
from corediff.maths.solvers import GridSolver, SolverGridConfig, Variable, scale_and_level


class EulerSamplerConfig(SolverGridConfig):
    type: Literal["euler"] = "euler"
    variable: Variable = Field(
        "sigma", description="ODE variable: 'sigma' (x/α over σ/α, Karras) or 'flow' "
        "(x/(α + σ) over σ/(α + σ), rectified flow).")


def euler_row(s, t, variable: str) -> tuple:
    """A step's plan: ("limit", σ'/σ, α') where α = 0 in the σ variable, else
    ("euler", 1/c, u, u' − u, c')."""
    if variable == "sigma" and s.alpha == 0:
        return ("limit", t.sigma_vp / s.sigma_vp, t.alpha)
    c, u = scale_and_level(s, variable)
    c_next, u_next = scale_and_level(t, variable)
    return ("euler", 1 / c, u, u_next - u, c_next)


def derivative(y: Tensor, prediction, u: float, variable: str) -> Tensor:
    """dy/du at a state: ε̂ − x̂0 in the flow variable when the prediction has ε̂, else
    (y − x̂0)/u."""
    if variable == "flow" and prediction.eps is not None:
        return prediction.eps - prediction.x0
    return (y - prediction.x0) / u


class EulerSampler(GridSolver):
    """Euler steps of the probability-flow ODE (first order, one evaluation a step)."""

    Config = EulerSamplerConfig
    multistep = False
    order = 1

    def plan(self, steps: list[float]) -> list[tuple]:
        n = self.nodes(steps)
        return [euler_row(s, t, self.config.variable) for s, t in zip(n, n[1:], strict=False)]

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        kind, *row = step.plan
        prediction = denoise(x, step.t)
        x0 = prediction.x0
        if kind == "limit":
            ratio, alpha_next = row
            return ratio * x + alpha_next * x0, x0
        inv_c, u, du, c_next = row
        y = x * inv_c
        if self.config.variable == "sigma":  # the arithmetic of k-diffusion / EDM, kept
            return (y + du / u * (y - x0)) * c_next, x0
        return (y + du * derivative(y, prediction, u, "flow")) * c_next, x0
