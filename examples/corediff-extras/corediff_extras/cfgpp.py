"""CFG++: Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion
Models", Algorithm 1: x̂0 from the λ-guided noise (λ ∈ [0, 1]), renoising with the
unconditional noise.

Algorithm 1 (CFG++ with DDIM):

    ε̂_λ = ε̂_∅ + λ·(ε̂_c − ε̂_∅),   λ ∈ [0, 1]
    x̂0  = (x_t − sqrt(1 − ᾱ_t)·ε̂_λ) / sqrt(ᾱ_t)               (Tweedie with the guided noise)
    x_s  = sqrt(ᾱ_s)·x̂0 + sqrt(1 − ᾱ_s)·ε̂_∅                   (renoise with the UNCONDITIONAL ε̂)

The guidance returns ``Prediction(x0=x̂0(ε̂_λ), eps=ε̂_∅)``; a sampler that moves with
``Prediction.eps`` as its renoising direction (DDIM: exactly Algorithm 1; ``deis``) then
samples CFG++. A sampler that builds its step from x̂0 and x_t alone (the DDPM posterior mean)
only sees the λ-interpolated x̂0.

ε̂ and x̂0 of each output come from the parameterization, so ε-, v- and x0-prediction networks
all work (a prediction without ε̂ gets ε̂ = (x_t − sqrt(ᾱ_t)·x̂0)/sqrt(1 − ᾱ_t)). Since x̂0 is
affine in ε̂ at fixed x_t, x̂0(ε̂_λ) = x̂0_∅ + λ·(x̂0_c − x̂0_∅); it is computed that way, which
never divides by sqrt(ᾱ_t) (finite at ᾱ_T = 0 with v-prediction). A learned log variance is
interpolated by λ likewise.

Unlike CFG, no λ spares the unconditional evaluation: λ = 0 is the unconditional model and
λ = 1 still renoises with ε̂_∅, so :meth:`CFGPlusPlusGuidance.active` is always true.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.maths.gaussian import GaussianTables, eps_from_x0
from corediff.interfaces import Guidance, Prediction


class CFGPlusPlusConfig(ComponentConfig):
    type: Literal["cfgpp"] = "cfgpp"
    scale: float = Field(
        0.6, ge=0, le=1,
        description="λ in [0, 1]: interpolates x̂0 from the unconditional (0) to the conditional "
        "(1) noise estimate; the renoising always uses the unconditional one.",
    )


class CFGPlusPlusGuidance(Guidance):
    """x̂0 from the λ-guided noise, ε̂ from the unconditional output."""

    Config = CFGPlusPlusConfig
    requires = {"degradation": frozenset({"gaussian"})}

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.tables = GaussianTables(self.degradation.schedule.values())

    def active(self, t: int) -> bool:
        return True  # every λ needs ε̂_∅ (see the module docstring)

    def noise(self, prediction: Prediction, x_t: Tensor, t: Tensor) -> Tensor:
        """ε̂ of a prediction, from its x̂0 when the parameterization gives none."""
        if prediction.eps is not None:
            return prediction.eps
        alpha = self.tables.bcast("sqrt_alpha_bar", t, x_t)
        sigma = self.tables.bcast("sqrt_one_minus", t, x_t)
        return eps_from_x0(x_t, prediction.x0, alpha, sigma)

    def combine(self, cond: Tensor, uncond: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        scale = self.config.scale
        conditional = self.parameterization.predict(cond, x_t, t)
        unconditional = self.parameterization.predict(uncond, x_t, t)
        x0 = unconditional.x0 + scale * (conditional.x0 - unconditional.x0)
        log_variance = unconditional.log_variance
        if log_variance is not None and conditional.log_variance is not None:
            log_variance = log_variance + scale * (conditional.log_variance - log_variance)
        return Prediction(x0=x0, eps=self.noise(unconditional, x_t, t),
                          log_variance=log_variance)
