"""Constant prior for cold generation (Bansal et al. 2022, "Cold Diffusion", §5: generation
starts from the fully degraded state; for SVD with k(T) = 0 that state is the zero image).

x_T = value + noise_std · ε (ε ~ N(0, I) breaks the symmetry of identical starts).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Prior
from corediff.maths.noise import randn


class ConstantPriorConfig(ComponentConfig):
    type: Literal["constant"] = "constant"
    value: float = Field(0.0, description="The constant every pixel starts at.")
    noise_std: NonNegativeFloat = Field(0.0, description="Std of added symmetry-breaking noise.")


class ConstantPrior(Prior):
    Config = ConstantPriorConfig

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        x = torch.full(shape, self.config.value, device=device)
        if self.config.noise_std > 0:
            x = x + self.config.noise_std * randn(shape, generator, device)
        return x
