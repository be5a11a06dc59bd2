"""``flow_euler``: a preset of the family's Euler (:mod:`corediff_plugins.samplers.euler`) for
flow matching: Liu et al. 2023, "Flow Straight and Fast", §2.1 (dx/dt = v(x, t) from t = 1 to
0) with SD3's time shift (Esser et al. 2024, §5.3.2, eq. 23): x_next = x + (t_next − t)·v̂, the
flow variable, on diffusers' FlowMatchEulerDiscreteScheduler grid
(:func:`corediff.maths.flow.flow_time_grid`). Same arithmetic as before the family refactor
(v̂ = ε̂ − x̂0, or (x − x̂0)/t without ε̂): samples bit for bit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corediff.maths.solvers import Variable
from corediff_plugins.samplers.euler import EulerSampler, EulerSamplerConfig


class FlowEulerSamplerConfig(EulerSamplerConfig):
    type: Literal["flow_euler"] = "flow_euler"
    variable: Variable = Field("flow", description="ODE variable (flow: x over t).")


class FlowEulerSampler(EulerSampler):
    """The family's Euler on flow matching's grid, in the flow variable."""

    Config = FlowEulerSamplerConfig
    requires = {"degradation": frozenset({"unit_time", "flow_path"})}
