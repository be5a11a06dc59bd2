"""Standard normal prior of Gaussian diffusion: x_T ~ N(0, I) (Ho et al. 2020, Algorithm 2,
line 1), optionally scaled (a temperature on the starting noise)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Prior
from corediff.noise import randn


class NormalPriorConfig(ComponentConfig):
    type: Literal["normal"] = "normal"
    scale: PositiveFloat = Field(1.0, description="Standard deviation of the starting noise.")


class NormalPrior(Prior):
    """x_T = scale·z, z ~ N(0, I)."""

    Config = NormalPriorConfig

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        return randn(shape, generator, device) * self.config.scale
