"""Cold Diffusion's 'Individual_Incremental' blur routine (Bansal et al. 2022, "Cold Diffusion",
§4.1; reference code: D(x0, t) applies only kernel t, of size 2t − 1 and std 2·(2t − 1)).

Not a composition: x_t = G_t * x0 with one Gaussian of std σ(t) = k · (2t − 1), which
values()[t] gives (capability "blur_sigma"; the default k = 2 is the reference's std). The blur
degradation truncates the kernel at ±ceil(truncate · σ), where the reference cut it to its
2t − 1 taps (which made it nearly a box filter).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule


class BlurIndividualIncrementalConfig(ComponentConfig):
    type: Literal["blur_individual_incremental"] = "blur_individual_incremental"
    steps: StepCount = Field(50, description="T, the number of blur steps.")
    kernel_std: PositiveFloat = Field(2.0, description="k: step t blurs x0 with std k·(2t − 1).")


class BlurIndividualIncrementalSchedule(Schedule):
    Config = BlurIndividualIncrementalConfig
    provides = frozenset({"blur_sigma"})

    def values(self) -> Tensor:
        t = torch.arange(self.steps + 1, dtype=torch.float64)
        return (self.config.kernel_std * (2 * t - 1)).clamp_min(0)
