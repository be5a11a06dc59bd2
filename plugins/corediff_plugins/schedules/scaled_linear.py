"""Scaled-linear β schedule of Latent Diffusion / Stable Diffusion (Rombach et al. 2022):
sqrt(β) linear from sqrt(0.00085) to sqrt(0.012) (diffusers' "scaled_linear")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.maths.gaussian import linear_betas
from corediff_plugins.schedules.base import GaussianSchedule, GaussianScheduleConfig


class ScaledLinearScheduleConfig(GaussianScheduleConfig):
    type: Literal["scaled_linear"] = "scaled_linear"
    beta_start: PositiveFloat = Field(0.00085, description="β_1.")
    beta_end: PositiveFloat = Field(0.012, description="β_T.")


class ScaledLinearSchedule(GaussianSchedule):
    """β_t = (sqrt(beta_start) + (sqrt(beta_end) - sqrt(beta_start))·(t-1)/(T-1))²."""

    Config = ScaledLinearScheduleConfig

    def betas(self) -> Tensor:
        return linear_betas(self.config.beta_start, self.config.beta_end, self.steps,
                            sqrt_space=True)
