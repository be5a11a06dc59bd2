"""Linear β schedule: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Sec. 4
(β_1 = 1e-4 .. β_T = 0.02), with both ends scaled by 1000 / T so that other step counts keep
the same ᾱ_T (Nichol & Dhariwal 2021, improved-diffusion's get_named_beta_schedule)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.maths.gaussian import linear_betas
from corediff_plugins.schedules.base import GaussianSchedule, GaussianScheduleConfig


class LinearScheduleConfig(GaussianScheduleConfig):
    type: Literal["linear"] = "linear"
    beta_start: PositiveFloat = Field(1e-4, description="β_1 at T = 1000 (scaled by 1000/T).")
    beta_end: PositiveFloat = Field(0.02, description="β_T at T = 1000 (scaled by 1000/T).")


class LinearSchedule(GaussianSchedule):
    """β_t linear in t between (1000/T)·beta_start and (1000/T)·beta_end."""

    Config = LinearScheduleConfig

    def betas(self) -> Tensor:
        scale = 1000 / self.steps
        return linear_betas(scale * self.config.beta_start, scale * self.config.beta_end,
                            self.steps, sqrt_space=False)
