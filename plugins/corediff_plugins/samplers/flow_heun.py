"""Heun sampling of a flow: Karras et al. 2022, "Elucidating the Design Space", Algorithm 1
(the 2nd-order correction, no churn) applied to dx/dt = v(x, t) of rectified flow (Liu et al.
2023), as diffusers' FlowMatchHeunDiscreteScheduler: d = v̂(x, t), x̃ = x + (t_next − t)·d,
x_next = x + (t_next − t)·(d + v̂(x̃, t_next)) / 2; the last step, to t = 0, is Euler."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.maths.flow import FlowGridConfig, flow_time_grid, velocity_of, visited_times
from corediff.interfaces import Denoise, Sampler, Step


class FlowHeunSamplerConfig(FlowGridConfig):
    type: Literal["flow_heun"] = "flow_heun"


class FlowHeunSampler(Sampler):
    """Two velocity evaluations per grid time, one on the last (an Euler step to 0)."""

    Config = FlowHeunSamplerConfig
    requires = {"degradation": frozenset({"unit_time", "flow_path"})}
    evaluations_per_step = 2

    def timesteps(self, start: float | None = None) -> list[float]:
        """The shifted grid's times from start (default 1.0), descending."""
        return visited_times(flow_time_grid(self.config.steps, self.config.shift), start)

    def nfe(self, start: float | None = None) -> int:
        return 2 * len(self.timesteps(start)) - 1

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        dt = step.t_next - step.t
        prediction = denoise(x, step.t)
        d = velocity_of(prediction, x, step.t_tensor(x))
        x_euler = x + dt * d
        if step.is_last:
            return x_euler, prediction.x0
        d_next = velocity_of(denoise(x_euler, step.t_next), x_euler, step.t_next_tensor(x))
        return x + dt * (0.5 * (d + d_next)), prediction.x0
