"""EDM loss weighting: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and eq. 8: λ(σ) = (σ² + σ_d²)/(σ·σ_d)² on ||D − x0||², i.e.
λ/s(σ) on the parameterization's own loss (exactly 1 with the edm parameterization, whose
s = 1/c_out² = λ)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting
from corediff.maths.edm import loss_weight


class EDMWeightingConfig(LossWeightingConfig):
    type: Literal["edm"] = "edm"
    sigma_data: PositiveFloat = Field(0.5, description="σ_d, the data's standard deviation.")


class EDMWeighting(LossWeighting):
    """λ(σ) = (σ² + σ_d²)/(σ·σ_d)² in x0 space."""

    Config = EDMWeightingConfig
    requires = {"degradation": frozenset({"sigma_time"})}

    def weight(self, t: Tensor) -> Tensor:
        return self.from_x0_weight(loss_weight(t, self.config.sigma_data), t).float()
