"""Linear rank schedule for SVD cold diffusion (Bansal et al. 2022, "Cold Diffusion", §3:
any degradation D(x0, t) with D(x0, 0) = x0; here the kept rank falls linearly in t).

values()[t] = f(t) = 1 − t / T, the kept fraction of the removable singular values (the
`svd` degradation maps it to k(t) = min_rank + round(f(t) · (min(H, W) − min_rank))), so with
T = min(H, W) − min_rank one singular value is dropped per step.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule


class RankLinearConfig(ComponentConfig):
    type: Literal["rank_linear"] = "rank_linear"
    steps: StepCount = Field(64, description="T; equal to the image rank: one value per step.")


class RankLinearSchedule(Schedule):
    Config = RankLinearConfig
    provides = frozenset({"rank"})

    def values(self) -> Tensor:
        t = torch.arange(self.steps + 1, dtype=torch.float64)
        return 1 - t / self.steps
