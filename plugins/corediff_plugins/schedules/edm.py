"""EDM noise levels: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and eq. 5: σ ∈ [σ_min, σ_max] (0.002, 80), with the ρ-grid
σ_i = (σ_max^(1/ρ) + i/(N − 1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, ρ = 7. ``values()`` is
σ(0) = 0 then that grid ascending over ``steps`` levels (for previews); training and sampling
use σ itself (capability "sigma")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule
from corediff.maths.gaussian import karras_sigmas


class EDMScheduleConfig(ComponentConfig):
    type: Literal["edm"] = "edm"
    sigma_min: PositiveFloat = Field(0.002, description="σ_min, the lowest noise level.")
    sigma_max: PositiveFloat = Field(80.0, description="σ_max, where generation starts.")
    rho: PositiveFloat = Field(7.0, description="ρ of the Karras grid (eq. 5).")
    steps: StepCount = Field(1000, description="Levels of the values() grid (previews only).")

    @model_validator(mode="after")
    def _check_range(self) -> EDMScheduleConfig:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max "
                             f"({self.sigma_max})")
        return self


class EDMSchedule(Schedule):
    """σ(0) = 0, then the Karras grid from σ_min up to σ_max."""

    Config = EDMScheduleConfig
    provides = frozenset({"sigma"})

    def values(self) -> Tensor:
        cfg = self.config
        grid = karras_sigmas(self.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho).flip(0)
        return torch.cat([grid.new_zeros(1), grid])
