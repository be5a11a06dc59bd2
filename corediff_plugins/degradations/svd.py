"""SVD rank-truncation degradation, a "cold" degradation (Bansal et al. 2022, "Cold Diffusion",
§3 with D(x0, t) a deterministic operator; here D keeps the top singular values).

Each channel of an image is an H×W matrix X = U Σ Vᵀ; D(x0, t) = U diag(σ_i · [i < k(t)]) Vᵀ
keeps the k(t) largest singular values, k(0) = min(H, W) (D(x0, 0) = x0 exactly) and
k(T) = ``min_rank``. The schedule (capability "rank") gives the kept FRACTION f(t) ∈ [0, 1]
of the removable ranks, so one schedule serves any image size:
k(t) = min_rank + round(f(t) · (min(H, W) − min_rank)).

Factor cache for training (the issue: never decompose the same image at every step)::

    factors = degradation.decompose(x0)              # once per image, e.g. cached by index
    factors = degradation.flip_factors(factors)      # horizontal flip: reverses Vᵀ's columns
    x_t = degradation.degrade_from_factors(factors, t)

``degrade_many`` serves every requested step from one decomposition (Algorithm 2 needs
D(x̂0, s) and D(x̂0, s − 1)). With ``noise_std`` > 0 the degradation is stochastic:
x_t = D_k(t)(x0) + noise_std · (t / T) · ε.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt
from torch import Tensor

from corediff.cold import svd_error_curve
from corediff.config import ComponentConfig
from corediff.interfaces import Degradation
from corediff.noise import randn


class SVDConfig(ComponentConfig):
    type: Literal["svd"] = "svd"
    min_rank: NonNegativeInt = Field(0, description="Singular values kept at t = T.")
    noise_std: NonNegativeFloat = Field(
        0.0, description="Std of additive noise at t = T (grows as t / T; 0: deterministic)."
    )


class SVDFactors(NamedTuple):
    """Thin SVD of every channel: U [B, C, H, K], S [B, C, K], Vh [B, C, K, W]."""

    U: Tensor
    S: Tensor
    Vh: Tensor


class SVDDegradation(Degradation):
    Config = SVDConfig
    provides = frozenset({"deterministic", "svd"})
    requires = {"schedule": frozenset({"rank"})}

    @classmethod
    def capabilities(cls, config: SVDConfig) -> frozenset[str]:
        """Stochastic rather than deterministic when ``noise_std > 0``."""
        return frozenset({"stochastic", "svd"}) if config.noise_std > 0 else cls.provides

    def ranks(self, full_rank: int, device: torch.device | str = "cpu") -> Tensor:
        """k(t) for t = 0..T (LongTensor [T + 1]) for matrices of rank ``full_rank``."""
        min_rank = self.config.min_rank
        if min_rank > full_rank:
            raise ValueError(f"svd min_rank={min_rank} exceeds the image rank {full_rank}")
        fraction = self.schedule.values().clamp(0, 1)
        return (min_rank + (fraction * (full_rank - min_rank)).round()).long().to(device)

    def decompose(self, x0: Tensor) -> SVDFactors:
        """Thin SVD of every channel of x0 [B, C, H, W], in float32 at least."""
        wide = x0 if x0.dtype == torch.float64 else x0.float()
        return SVDFactors(*torch.linalg.svd(wide, full_matrices=False))

    @staticmethod
    def flip_factors(factors: SVDFactors) -> SVDFactors:
        """Factors of the horizontally flipped images: X[:, ::-1] = U Σ (V[::-1])ᵀ."""
        return factors._replace(Vh=factors.Vh.flip(-1))

    def degrade_from_factors(
        self, factors: SVDFactors, t: Tensor, noise: Tensor | None = None
    ) -> Tensor:
        """D(x0, t) from cached factors (equals x0 at t = 0 up to float rounding)."""
        U, S, Vh = factors
        k = self.ranks(S.shape[-1], S.device)[t]
        kept = torch.arange(S.shape[-1], device=S.device) < k[:, None]
        x_t = (U * (S * kept[:, None, :])[..., None, :]) @ Vh
        return self._add_noise(x_t, t, noise)

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.degrade_many(x0, [t], noise)[0]

    def degrade_many(
        self, x0: Tensor, ts: list[Tensor], noise: Tensor | None = None
    ) -> list[Tensor]:
        if self.config.noise_std > 0 and noise is None:
            noise = torch.randn_like(x0)
        factors = self.decompose(x0)
        out = []
        for t in ts:
            x_t = self.degrade_from_factors(factors, t, noise)
            out.append(torch.where((t == 0)[:, None, None, None], x0, x_t.to(x0.dtype)))
        return out

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        if self.config.noise_std == 0:
            return None
        return randn(x0.shape, generator, x0.device, x0.dtype)

    def estimate_noise(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor | None:
        if self.config.noise_std == 0:
            return None
        zero = torch.zeros_like(x_t)
        residual = x_t - self.degrade(x0_hat, t, zero)
        scale = self._noise_scale(t, x_t)
        return torch.where(scale > 0, residual / scale.clamp_min(1e-12), zero)

    def error_curve(self, images: Tensor) -> Tensor:
        """Mean |x − D_k(x)| for k = 0 .. min(H, W) (float64 [K + 1])."""
        return svd_error_curve(images)

    def _noise_scale(self, t: Tensor, like: Tensor) -> Tensor:
        scale = self.config.noise_std * t.to(torch.float64) / self.steps
        return scale.to(like.dtype)[:, None, None, None]

    def _add_noise(self, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        if self.config.noise_std == 0:
            return x_t
        noise = torch.randn_like(x_t) if noise is None else noise
        return x_t + self._noise_scale(t, x_t) * noise
