"""Min-SNR-γ weighting: Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
Strategy", eq. 9-10: x0-space weight min(snr_t, γ), i.e. min(snr, γ)/snr for ε-prediction,
min(snr, γ) for x0, min(snr, γ)/(snr + 1) for v, min(snr, γ)/coef_x0² for μ."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting


class MinSNRWeightingConfig(LossWeightingConfig):
    type: Literal["min_snr"] = "min_snr"
    gamma: PositiveFloat = Field(5.0, description="γ: the SNR above which weights stop growing.")


class MinSNRWeighting(LossWeighting):
    """λ(t) = min(snr_t, γ) / s(t) on the parameterization's loss."""

    Config = MinSNRWeightingConfig
    requires = {"degradation": frozenset({"snr"})}

    def weight(self, t: Tensor) -> Tensor:
        clipped = self.degradation.snr(t).clamp(max=self.config.gamma)
        return self.from_x0_weight(clipped, t).float()
