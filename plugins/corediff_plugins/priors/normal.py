"""Normal prior: x_T ~ N(0, I) for Gaussian diffusion (Ho et al. 2020, Algorithm 2, line 1) and
flow matching, x_σmax ~ N(0, σ_max²·I) for EDM (the degradation's ``prior_std()``), optionally
scaled (a temperature on the starting noise)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Prior
from corediff.maths.noise import randn


class NormalPriorConfig(ComponentConfig):
    type: Literal["normal"] = "normal"
    scale: PositiveFloat = Field(
        1.0, description="Temperature: the starting noise's std is scale · the degradation's "
        "prior_std() (1, or σ_max for EDM).")


class NormalPrior(Prior):
    """x_T = scale·z, z ~ N(0, I)."""

    Config = NormalPriorConfig
    #: At scale 1 its draws follow the marginal at t_max (checked by corediff.testing).
    marginal = True

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        return randn(shape, generator, device) * (self.config.scale * self.degradation.prior_std())
