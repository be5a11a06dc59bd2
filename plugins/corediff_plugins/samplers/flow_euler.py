"""Euler sampling of a flow: Liu et al. 2023, "Flow Straight and Fast", §2.1 (the ODE
dx/dt = v(x, t) integrated from t = 1 to 0); Esser et al. 2024 (SD3), with its time shift
(§5.3.2, eq. 23): x_next = x + (t_next − t)·v̂ on diffusers' FlowMatchEulerDiscreteScheduler
grid (corediff.maths.flow.flow_time_grid)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.maths.flow import FlowGridConfig, flow_time_grid, velocity_of, visited_times
from corediff.interfaces import Denoise, Sampler, Step


class FlowEulerSamplerConfig(FlowGridConfig):
    type: Literal["flow_euler"] = "flow_euler"


class FlowEulerSampler(Sampler):
    """One velocity evaluation and one Euler step per grid time; the last step lands on 0."""

    Config = FlowEulerSamplerConfig
    requires = {"degradation": frozenset({"unit_time", "flow_path"})}

    def timesteps(self, start: float | None = None) -> list[float]:
        """The shifted grid's times from start (default 1.0), descending."""
        return visited_times(flow_time_grid(self.config.steps, self.config.shift), start)

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        prediction = denoise(x, step.t)
        v = velocity_of(prediction, x, step.t_tensor(x))
        return x + (step.t_next - step.t) * v, prediction.x0
