"""Logit-normal training times: Esser et al. 2024, "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis" (SD3), §3.1, eq. 19: t = sigmoid(m + s·z), z ~ N(0, 1),
which puts more training on the middle of the path; m = 0, s = 1 is their best setting
(rf/lognorm(0.00, 1.00)). No importance weights: the density is part of the objective."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import TimeSampler
from corediff.maths.noise import randn

#: Times are clamped to [EPS, 1 − EPS], strictly inside (0, 1).
EPS = 1e-5


class LogitNormalTimeSamplerConfig(ComponentConfig):
    type: Literal["logit_normal"] = "logit_normal"
    mean: float = Field(0.0, description="m, the mean of logit(t) (> 0: more weight on noise).")
    std: PositiveFloat = Field(1.0, description="s, the standard deviation of logit(t).")


class LogitNormalTimeSampler(TimeSampler):
    """t = sigmoid(m + s·z), float64, in [1e-5, 1 − 1e-5]."""

    Config = LogitNormalTimeSamplerConfig
    requires = {"degradation": frozenset({"unit_time"})}

    def sample(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str,
    ) -> tuple[Tensor, Tensor | None]:
        z = randn((batch,), generator, device, torch.float64)
        t = torch.sigmoid(self.config.mean + self.config.std * z)  # type: ignore[attr-defined]
        return t.clamp(EPS, 1 - EPS), None
