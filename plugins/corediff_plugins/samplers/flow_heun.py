"""``flow_heun``: a preset of the family's Heun (:mod:`corediff_plugins.samplers.heun`) for
flow matching: Karras et al. 2022, Algorithm 1 applied to dx/dt = v(x, t) of rectified flow
(Liu et al. 2023), as diffusers' FlowMatchHeunDiscreteScheduler: d = v̂(x, t),
x̃ = x + (t_next − t)·d, x_next = x + (t_next − t)·(d + v̂(x̃, t_next))/2, the last step (to
t = 0) Euler; the flow variable on flow's grid with SD3's shift. Same arithmetic as before the
family refactor: samples bit for bit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corediff.maths.solvers import Variable
from corediff_plugins.samplers.heun import HeunSampler, HeunSamplerConfig


class FlowHeunSamplerConfig(HeunSamplerConfig):
    type: Literal["flow_heun"] = "flow_heun"
    variable: Variable = Field("flow", description="ODE variable (flow: x over t).")


class FlowHeunSampler(HeunSampler):
    """The family's Heun on flow matching's grid, in the flow variable."""

    Config = FlowHeunSamplerConfig
    requires = {"degradation": frozenset({"unit_time", "flow_path"})}
