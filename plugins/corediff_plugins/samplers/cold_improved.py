"""Cold Diffusion's improved sampler, Algorithm 2 (Bansal et al. 2022, "Cold Diffusion", §3.2,
"TACoS"): for s = T..1: x̂0 = R(x_s, s); x_{s−1} = x_s − D(x̂0, s) + D(x̂0, s − 1).

Both D terms come from one ``degrade_many`` call (one SVD of x̂0 for the svd degradation). With
the true x0 as restoration it returns x0 exactly; for the Gaussian degradation (noise estimated
from x_s) it is DDIM with η = 0. With ``steps`` set, "s − 1" is the next visited step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff_plugins.samplers.base import ColdSampler


class ColdImprovedConfig(ComponentConfig):
    type: Literal["cold_improved"] = "cold_improved"
    steps: StepCount | None = Field(
        None, description="Visited steps, evenly spaced from the start to 1 (None: every step)."
    )


class ColdImprovedSampler(ColdSampler):
    Config = ColdImprovedConfig

    def update(
        self, x_s: Tensor, x0_hat: Tensor, s: Tensor, s_next: Tensor, noise: Tensor | None
    ) -> Tensor:
        d_s, d_next = self.degradation.degrade_many(x0_hat, [s, s_next], noise)
        return x_s - d_s + d_next
