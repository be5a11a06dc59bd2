"""Log-normal training noise levels: Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Table 1 and §5: ln σ ~ N(P_mean, P_std²), P_mean = −1.2,
P_std = 1.2, clamped to (0, σ_max]. No importance weights."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import TimeSampler
from corediff.maths.noise import randn


class LogNormalSigmaTimeSamplerConfig(ComponentConfig):
    type: Literal["lognormal_sigma"] = "lognormal_sigma"
    p_mean: float = Field(-1.2, description="P_mean, the mean of ln σ.")
    p_std: PositiveFloat = Field(1.2, description="P_std, the standard deviation of ln σ.")


class LogNormalSigmaTimeSampler(TimeSampler):
    """σ = exp(P_mean + P_std·z), z ~ N(0, 1), float64."""

    Config = LogNormalSigmaTimeSamplerConfig
    requires = {"degradation": frozenset({"sigma_time"})}

    def sample(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str,
    ) -> tuple[Tensor, Tensor | None]:
        z = randn((batch,), generator, device, torch.float64)
        sigma = (self.config.p_mean + self.config.p_std * z).exp()
        tiny = torch.finfo(torch.float64).tiny
        return sigma.clamp(tiny, float(self.degradation.t_max)), None
