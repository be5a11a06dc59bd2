"""Cosine schedule: Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic
Models", eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), β_t capped at 0.999
(diffusers' "squaredcos_cap_v2")."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.maths.gaussian import betas_for_alpha_bar
from corediff_plugins.schedules.base import GaussianSchedule, GaussianScheduleConfig


class CosineScheduleConfig(GaussianScheduleConfig):
    type: Literal["cosine"] = "cosine"
    s: PositiveFloat = Field(0.008, description="Offset s keeping β_1 from being too small.")
    max_beta: float = Field(0.999, gt=0, lt=1, description="Cap on β_t near t = T.")


class CosineSchedule(GaussianSchedule):
    """β_t = min(1 - ᾱ(t)/ᾱ(t-1), max_beta) with the cosine ᾱ."""

    Config = CosineScheduleConfig

    def betas(self) -> Tensor:
        s = self.config.s

        def f(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        return betas_for_alpha_bar(f, self.steps, self.config.max_beta)
