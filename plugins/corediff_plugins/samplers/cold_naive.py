"""Cold Diffusion's naive sampler, Algorithm 1 (Bansal et al. 2022, "Cold Diffusion", §3.2):
for s = T..1: x̂0 = R(x_s, s); x_{s−1} = D(x̂0, s − 1).

Works with any degradation; with ``steps`` set, "s − 1" is the next visited step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff_plugins.samplers.base import ColdSampler


class ColdNaiveConfig(ComponentConfig):
    type: Literal["cold_naive"] = "cold_naive"
    steps: StepCount | None = Field(
        None, description="Visited steps, evenly spaced from the start to 1 (None: every step)."
    )


class ColdNaiveSampler(ColdSampler):
    Config = ColdNaiveConfig

    def update(
        self, x_s: Tensor, x0_hat: Tensor, s: Tensor, s_next: Tensor, noise: Tensor | None
    ) -> Tensor:
        return self.degradation.degrade(x0_hat, s_next, noise)
