"""Quadratic β schedule of the original DDPM code (Ho et al. 2020, "quad"): sqrt(β) linear
from sqrt(1e-4) to sqrt(0.02), both ends scaled by 1000 / T like the linear schedule."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.maths.gaussian import linear_betas
from corediff_plugins.schedules.base import GaussianSchedule, GaussianScheduleConfig


class QuadraticScheduleConfig(GaussianScheduleConfig):
    type: Literal["quadratic"] = "quadratic"
    beta_start: PositiveFloat = Field(1e-4, description="β_1 at T = 1000 (scaled by 1000/T).")
    beta_end: PositiveFloat = Field(0.02, description="β_T at T = 1000 (scaled by 1000/T).")


class QuadraticSchedule(GaussianSchedule):
    """β_t quadratic in t: sqrt(β_t) linear between the scaled endpoints."""

    Config = QuadraticScheduleConfig

    def betas(self) -> Tensor:
        scale = 1000 / self.steps
        return linear_betas(scale * self.config.beta_start, scale * self.config.beta_end,
                            self.steps, sqrt_space=True)
