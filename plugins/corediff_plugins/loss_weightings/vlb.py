"""ELBO weighting: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 12: the
KL term L_{t-1} equals β_t² / (2σ_t²·α_t·(1 - ᾱ_t)) times the ε-MSE, with σ_t² = β̃_t (fixed
small; clipped to β̃_2 at t = 1, where β̃_1 = 0, as improved-diffusion's log variance).
As an x0-space weight it is that coefficient times snr_t, mapped onto any parameterization.
ᾱ is recovered from the degradation's snr: ᾱ = snr / (1 + snr)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting
from corediff.maths.gaussian import posterior_coefficients


class VLBWeightingConfig(LossWeightingConfig):
    type: Literal["vlb"] = "vlb"


class VLBWeighting(LossWeighting):
    """λ(t) = β_t² / (2β̃_t·α_t·(1 - ᾱ_t)) · snr_t / s(t) on the parameterization's loss."""

    Config = VLBWeightingConfig
    requires = {"degradation": frozenset({"snr"})}

    def _alpha_bar(self, t: Tensor) -> Tensor:
        return 1 / (1 + 1 / self.degradation.snr(t))

    def weight(self, t: Tensor) -> Tensor:
        alpha_bar = self._alpha_bar(t)
        alpha = alpha_bar / self._alpha_bar(t - 1)
        beta = 1 - alpha
        t_clip = torch.maximum(t, torch.full_like(t, 2))
        sigma2 = posterior_coefficients(self._alpha_bar(t_clip), self._alpha_bar(t_clip - 1))[2]
        weight_eps = beta.square() / (2 * sigma2 * alpha * (1 - alpha_bar))
        snr = self.degradation.snr(t)
        return (weight_eps * self.from_x0_weight(snr, t)).float()
