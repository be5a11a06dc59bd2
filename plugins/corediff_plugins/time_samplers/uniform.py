"""Uniform training times: DDPM's Algorithm 1 (Ho et al. 2020), t ~ U{1, ..., T}, for a
discrete degradation; t ~ U(0, t_max) for a continuous one (rectified flow's t ~ U(0, 1),
Liu et al. 2023). No importance weights."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import TimeSampler
from corediff.maths.noise import rand, randint


class UniformTimeSamplerConfig(ComponentConfig):
    type: Literal["uniform"] = "uniform"


class UniformTimeSampler(TimeSampler):
    """Every step (or every time) equally likely."""

    Config = UniformTimeSamplerConfig

    def sample(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str,
    ) -> tuple[Tensor, Tensor | None]:
        t_max = self.degradation.t_max
        if isinstance(t_max, int):  # discrete steps 1..T
            return randint(1, t_max + 1, (batch,), generator, device), None
        return rand((batch,), generator, device, torch.float64) * t_max, None
