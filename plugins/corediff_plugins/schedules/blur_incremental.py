"""Cold Diffusion's 'Incremental' blur routine (Bansal et al. 2022, "Cold Diffusion", §4.1:
x_t = G_t * x_{t−1}, Gaussian kernels whose std grows with the step).

Step i applies a Gaussian of std k·i (i = 1..T); the composition of t of them is one Gaussian of
width σ(t) = k · sqrt(Σ_{i ≤ t} i²), which values()[t] gives
(capabilities "blur_sigma" and "blur_composed": the blur is t kernels applied in turn).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule
from corediff.maths.cold import composed_sigma


class BlurIncrementalConfig(ComponentConfig):
    type: Literal["blur_incremental"] = "blur_incremental"
    steps: StepCount = Field(50, description="T, the number of blur steps.")
    kernel_std: PositiveFloat = Field(0.1, description="k: step i blurs with std k·i pixels.")


class BlurIncrementalSchedule(Schedule):
    Config = BlurIncrementalConfig
    provides = frozenset({"blur_sigma", "blur_composed"})

    def values(self) -> Tensor:
        i = torch.arange(1, self.steps + 1, dtype=torch.float64)
        return composed_sigma(self.config.kernel_std * i)
