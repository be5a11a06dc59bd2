"""Cold Diffusion's 'Exponential' / 'Exponential_reflect' blur routines (Bansal et al. 2022,
"Cold Diffusion", §4.1; reference code ``get_kernels``: kernel i has std exp(k·i), i = 0..T−1).

Step i (1-based) blurs with std exp(k·(i − 1)); t steps compose to one Gaussian of width
σ(t) = sqrt(Σ_{i ≤ t} exp(2k(i − 1))), which values()[t] gives
(capabilities "blur_sigma" and "blur_composed": the blur is t kernels applied in turn).
The '_reflect' variant is the blur degradation's ``padding = "reflect"``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule
from corediff.maths.cold import composed_sigma


class BlurExponentialConfig(ComponentConfig):
    type: Literal["blur_exponential"] = "blur_exponential"
    steps: StepCount = Field(50, description="T, the number of blur steps.")
    kernel_std: PositiveFloat = Field(
        0.05, description="k: step i blurs with std exp(k·(i − 1)) pixels."
    )


class BlurExponentialSchedule(Schedule):
    Config = BlurExponentialConfig
    provides = frozenset({"blur_sigma", "blur_composed"})

    def values(self) -> Tensor:
        i = torch.arange(self.steps, dtype=torch.float64)
        return composed_sigma(torch.exp(self.config.kernel_std * i))
