"""SNR weighting: the x0-space loss weighted by snr_t = ᾱ_t / (1 - ᾱ_t), i.e. L_simple of
ε-prediction (Ho et al. 2020, eq. 14; Kingma et al. 2021, "Variational Diffusion Models",
eq. 13), mapped onto any parameterization as snr / s(t).

Not the DDPM book's "SNR weighting" (``snr_book``): that one is 1 / (1 + snr_t) on the ε loss,
i.e. x0-space weight snr / (1 + snr) = ᾱ_t, which down-weights the low-noise steps that this
weighting (weight 1 on the ε loss) keeps at full weight."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting


class SNRWeightingConfig(LossWeightingConfig):
    type: Literal["snr"] = "snr"


class SNRWeighting(LossWeighting):
    """λ(t) = snr_t / s(t) on the parameterization's loss."""

    Config = SNRWeightingConfig
    requires = {"degradation": frozenset({"snr"})}

    def weight(self, t: Tensor) -> Tensor:
        snr = self.degradation.snr(t)
        return self.from_x0_weight(snr, t).float()
