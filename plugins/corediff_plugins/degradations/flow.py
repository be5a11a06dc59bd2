"""The rectified-flow path: Liu et al. 2023, "Flow Straight and Fast", eq. 1; Lipman et al.
2023, "Flow Matching for Generative Modeling", eq. 20-23 with σ_min = 0; SD3's training path
(Esser et al. 2024, §2): x_t = (1 − t)·x0 + t·ε, ε ~ N(0, I), t ∈ [0, 1].

Times are float64 tensors (continuous, t_max = 1.0). An integer tensor is read as a step k of
the schedule's grid, t = k / steps, which is what step-indexed previews pass.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation
from corediff.maths.family import FlowFamily
from corediff.maths.flow import bcast
from corediff.maths.noise import randn


class FlowDegradationConfig(ComponentConfig):
    type: Literal["flow"] = "flow"


class FlowDegradation(Degradation, FlowFamily):
    """x_t = (1 − t)·x0 + t·ε: the clean image at t = 0, pure noise at t = 1; the flow member
    of the Gaussian family (:class:`corediff.maths.family.FlowFamily`: α = 1 − t, σ = t)."""

    Config = FlowDegradationConfig
    provides = frozenset({"continuous", "unit_time", "flow_path", "stochastic",
                          "gaussian_family"})
    requires = {"schedule": frozenset({"flow"})}

    @property
    def t_max(self) -> float:
        return 1.0

    def time(self, t: Tensor) -> Tensor:
        """t as float64 times: floats unchanged, integer grid steps k as k / steps."""
        return t.double() if t.is_floating_point() else t.double() / self.steps

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = self.sample_noise(x0)
        t = bcast(self.time(t), x0)
        return (1 - t) * x0 + t * noise

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return randn(x0.shape, generator, x0.device, x0.dtype)

    def estimate_noise(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """ε = (x_t − (1 − t)·x̂0) / t; zeros at t = 0."""
        t = self.time(t)
        inv_t = torch.where(t > 0, 1 / t, torch.zeros_like(t))
        return (x_t - (1 - bcast(t, x_t)) * x0_hat) * bcast(inv_t, x_t)
