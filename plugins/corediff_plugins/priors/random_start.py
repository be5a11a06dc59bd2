"""Random-start prior: generation starts from random input at step start_step() =
max(1, round(fraction · T)) (fraction · t_max for continuous times), for any degradation —
Gaussian (Ho et al. 2020, Algorithm 2, line 1: x_T ~ N(0, I), here with a temperature and
an earlier start) or cold (Bansal et al. 2022, "Cold Diffusion", §5: generation from a
degraded state; the SVD notes'
"k从总共的70%开始 random" and "input = zeros or random_noise": start at 70 % of T from random
noise instead of the zero image of the ``constant`` prior).

x_start = scale · z with z ~ N(0, I) ("normal": scale is the standard deviation) or
z ~ U(−1, 1) ("uniform": scale is the half-width), drawn on the generator's device.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Prior
from corediff.maths.noise import rand, randn
from corediff.maths.timesteps import time_at


class RandomStartPriorConfig(ComponentConfig):
    type: Literal["random_start"] = "random_start"
    distribution: Literal["normal", "uniform"] = Field(
        "normal", description="'normal': N(0, scale²); 'uniform': U(−scale, scale).")
    fraction: float = Field(
        1.0, gt=0, le=1, description="Start step as a fraction of T: max(1, round(fraction·T)).")
    scale: PositiveFloat = Field(
        1.0, description="Standard deviation (normal) or half-width (uniform) of the start.")


class RandomStartPrior(Prior):
    """x at step max(1, round(fraction·T)) is scale·z, z standard normal or uniform on
    [−1, 1)."""

    Config = RandomStartPriorConfig

    def start_step(self) -> int | float:
        return time_at(self.config.fraction, self.degradation.t_max)

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        if self.config.distribution == "normal":
            z = randn(shape, generator, device)
        else:
            z = rand(shape, generator, device) * 2 - 1
        return self.config.scale * z
