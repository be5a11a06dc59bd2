"""Sigmoid β schedule of GeoDiff (Xu et al. 2022, "GeoDiff", Sec. 5):
β_t = beta_start + (beta_end - beta_start)·sigmoid(-6 + 12·(t-1)/(T-1)), diffusers' "sigmoid"."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff_plugins.schedules.base import GaussianSchedule, GaussianScheduleConfig


class SigmoidScheduleConfig(GaussianScheduleConfig):
    type: Literal["sigmoid"] = "sigmoid"
    beta_start: PositiveFloat = Field(1e-4, description="β as the sigmoid tends to 0.")
    beta_end: PositiveFloat = Field(0.02, description="β as the sigmoid tends to 1.")
    edge: PositiveFloat = Field(6.0, description="The sigmoid's argument runs from -edge to edge.")


class SigmoidSchedule(GaussianSchedule):
    """β_t follows a sigmoid between beta_start and beta_end."""

    Config = SigmoidScheduleConfig

    def betas(self) -> Tensor:
        c = self.config
        ramp = torch.linspace(-c.edge, c.edge, self.steps, dtype=torch.float64)
        return c.beta_start + (c.beta_end - c.beta_start) * torch.sigmoid(ramp)
