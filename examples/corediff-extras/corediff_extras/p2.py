"""P2 weighting: Choi et al. 2022, "Perception Prioritized Training of Diffusion Models", eq. 8:
λ'(t) = 1/(k + SNR(t))^γ on the ε MSE, expressed on any parameterization's loss.

Eq. 8 with λ_t = 1 (L_simple, the paper's baseline):

    L = Σ_t λ'_t·||ε − ε̂_θ(x_t, t)||²,   λ'_t = λ_t / (k + SNR(t))^γ.

Since ||ε − ε̂||² = SNR(t)·||x0 − x̂0||², the weight on the x0 MSE is SNR/(k + SNR)^γ, and on a
parameterization's own loss (scale s(t) with ||target − output||² = s(t)·||x0 − x̂0||²) it is

    w(t) = (SNR(t) / s(t)) · (k + SNR(t))^(−γ):
    1/(k + SNR)^γ for ε, SNR/(k + SNR)^γ for x0, SNR/((SNR + 1)(k + SNR)^γ) for v.

γ = 0 is L_simple for ε-prediction. At SNR ∈ {0, ∞} the ratio SNR/s(t) may be 0/0 or ∞/∞; it
takes its limit 1 (the ratios of SNR-affine scales used by corediff's Gaussian
parameterizations). Where SNR/s(t) = ∞ and (k + SNR)^(−γ) = 0 (x0-type losses at SNR = ∞, i.e.
t = 0, never sampled in training) w takes the limit of SNR^(1−γ).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting


class P2WeightingConfig(LossWeightingConfig):
    type: Literal["p2"] = "p2"
    gamma: float = Field(1.0, ge=0, description="γ: how strongly high-SNR (low-noise) steps are "
                         "down-weighted; 0 is L_simple for ε-prediction.")
    k: float = Field(1.0, gt=0, description="k: keeps the weight finite as SNR → 0 (the weight "
                     "on the ε MSE is at most k^(−γ)).")


class P2Weighting(LossWeighting):
    """w(t) = SNR(t)/(k + SNR(t))^γ / s(t) on the parameterization's loss."""

    Config = P2WeightingConfig
    requires = {"degradation": frozenset({"snr"})}

    def weight(self, t: Tensor) -> Tensor:
        cfg = self.config
        snr = self.degradation.snr(t).double()
        weight = self.from_x0_weight(snr, t) * (cfg.k + snr).pow(-cfg.gamma)
        at_infinity = 1.0 if cfg.gamma == 1 else (0.0 if cfg.gamma > 1 else math.inf)
        return torch.where(weight.isnan(), torch.full_like(weight, at_infinity), weight).float()
