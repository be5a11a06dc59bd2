"""Cold Diffusion's 'Constant' blur routine (Bansal et al. 2022, "Cold Diffusion", §4.1:
x_t = G * x_{t−1} with one fixed Gaussian kernel).

Every step blurs with std k; t steps compose to one Gaussian of width σ(t) = k · sqrt(t),
which values()[t] gives
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


class BlurConstantConfig(ComponentConfig):
    type: Literal["blur_constant"] = "blur_constant"
    steps: StepCount = Field(50, description="T, the number of blur steps.")
    kernel_std: PositiveFloat = Field(1.0, description="k: the std of every step's blur (pixels).")


class BlurConstantSchedule(Schedule):
    Config = BlurConstantConfig
    provides = frozenset({"blur_sigma", "blur_composed"})

    def values(self) -> Tensor:
        kernel_std = torch.full((self.steps,), self.config.kernel_std, dtype=torch.float64)
        return composed_sigma(kernel_std)
