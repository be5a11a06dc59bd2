"""EDM forward process: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", eq. 2 and Table 1 with s(t) = 1, σ(t) = t (variance exploding):
x_σ = x0 + σ·ε, ε ~ N(0, I). Time is the noise level itself, t = σ ∈ [0, σ_max]."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation
from corediff.maths.family import EDMFamily
from corediff.maths.noise import randn


class EDMDegradationConfig(ComponentConfig):
    type: Literal["edm"] = "edm"


def _bcast(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.double().to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class EDMDegradation(Degradation, EDMFamily):
    """x_σ = x0 + σ·ε with t = σ (float64 [B]); t_max = σ_max of the schedule; the EDM member
    of the Gaussian family (:class:`corediff.maths.family.EDMFamily`: α = 1, σ = t)."""

    Config = EDMDegradationConfig
    provides = frozenset({"continuous", "sigma_time", "stochastic", "snr", "gaussian_family"})
    requires = {"schedule": frozenset({"sigma"})}

    @property
    def t_max(self) -> float:
        return float(self.schedule.config.sigma_max)  # type: ignore[attr-defined]

    def prior_std(self) -> float:
        return self.t_max

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = self.sample_noise(x0)
        return x0 + _bcast(t, x0) * noise

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return randn(x0.shape, generator, x0.device, x0.dtype)

    def estimate_noise(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """ε = (x_σ − x̂0)/σ; zeros at σ = 0."""
        sigma = _bcast(t, x_t)
        return torch.where(sigma > 0, (x_t - x0_hat) / sigma, torch.zeros_like(x_t))

    def snr(self, t: Tensor) -> Tensor:
        """1/σ² (float64; inf at σ = 0)."""
        return t.double().square().reciprocal()
