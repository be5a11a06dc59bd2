"""The DDPM book's SNR weighting (chapter 3, §3.4.3 "损失函数的加权策略", ``get_loss_weight``
strategy 'snr'): λ(t) = 1 / (1 + SNR(t)) on the ε-MSE ||ε − ε̂||² of L_simple (Ho et al. 2020,
eq. 14), SNR(t) = ᾱ_t / (1 − ᾱ_t).

Since ||ε − ε̂||² = SNR(t)·||x0 − x̂0||², the x0-space weight is SNR / (1 + SNR) (= ᾱ_t for a
variance-preserving degradation), mapped onto any parameterization's own loss as
SNR / ((1 + SNR)·s(t)): 1/(1 + SNR) for ε, SNR/(1 + SNR) for x0, SNR/(1 + SNR)² for v.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting


class SNRBookWeightingConfig(LossWeightingConfig):
    type: Literal["snr_book"] = "snr_book"


class SNRBookWeighting(LossWeighting):
    """λ(t) = SNR_t / (1 + SNR_t) / s(t) on the parameterization's loss (1 / (1 + SNR_t) on
    the ε loss)."""

    Config = SNRBookWeightingConfig
    requires = {"degradation": frozenset({"snr"})}

    def weight(self, t: Tensor) -> Tensor:
        snr = self.degradation.snr(t)
        return self.from_x0_weight(snr / (1 + snr), t).float()
