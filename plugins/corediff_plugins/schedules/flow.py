"""The flow-matching time grid: rectified flow (Liu et al. 2023, "Flow Straight and Fast",
eq. 1) and flow matching with σ_min = 0 (Lipman et al. 2023, eq. 23) use the straight path
α_t = 1 − t, σ_t = t for t ∈ [0, 1]; time is continuous, so the schedule is only the grid
t_k = k / steps that previews and step-indexed tools read (``values()``)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule


class FlowScheduleConfig(ComponentConfig):
    type: Literal["flow"] = "flow"
    steps: StepCount = Field(
        1000, description="Points of the preview grid t_k = k / steps (training and sampling "
        "use continuous t).")


class FlowSchedule(Schedule):
    """values()[k] = t_k = k / steps, float64 [steps + 1]."""

    Config = FlowScheduleConfig
    provides = frozenset({"flow"})

    def values(self) -> Tensor:
        return torch.arange(self.steps + 1, dtype=torch.float64) / self.steps
