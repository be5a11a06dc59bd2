"""Quadratic β schedule of the DDPM book (chapter 3, §3.2.3 "噪声调度的设计",
``quadratic_beta_schedule``): β_t = β_start + (β_end − β_start)·τ_t² with τ = linspace(0, 1, T),
i.e. τ_t = (t − 1)/(T − 1) for t = 1..T, so β_1 = β_start and β_T = β_end (endpoints not
rescaled with T).

Not the ``quadratic`` schedule (the original DDPM code's "quad", Ho et al. 2020), where sqrt(β)
is linear in t: there β_t = (a + (b − a)·τ_t)² with a = sqrt(β_start), b = sqrt(β_end) (both
scaled by 1000/T); here β itself grows as τ² from β_start, staying near β_start longer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff_plugins.schedules.base import GaussianSchedule, GaussianScheduleConfig


class QuadraticBookScheduleConfig(GaussianScheduleConfig):
    type: Literal["quadratic_book"] = "quadratic_book"
    beta_start: PositiveFloat = Field(1e-4, description="β_1 (whatever T).")
    beta_end: PositiveFloat = Field(0.02, description="β_T (whatever T).")


class QuadraticBookSchedule(GaussianSchedule):
    """β_t = β_start + (β_end − β_start)·((t − 1)/(T − 1))², t = 1..T."""

    Config = QuadraticBookScheduleConfig

    def betas(self) -> Tensor:
        tau = torch.linspace(0, 1, self.steps, dtype=torch.float64)
        start, end = self.config.beta_start, self.config.beta_end
        return start + (end - start) * tau.square()
