"""Gaussian forward process: Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
eq. 4: q(x_t | x0) = N(sqrt(ᾱ_t)·x0, (1 - ᾱ_t)·I), with the posterior q(x_s | x_t, x0) of
eq. 6-7 generalised to any s < t (Song et al. 2021, DDIM, eq. 7 with σ² = β̃)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Schedule
from corediff.maths.family import VPFamily
from corediff.maths.gaussian import GaussianTables, posterior_coefficients
from corediff.maths.noise import randn


class GaussianDegradationConfig(ComponentConfig):
    type: Literal["gaussian"] = "gaussian"


class GaussianDegradation(Degradation, VPFamily):
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·ε, ᾱ from the schedule's values(); the VP member of
    the Gaussian family (:class:`corediff.maths.family.VPFamily`: α(t), σ(t), λ(t) and their
    inverses at fractional steps)."""

    Config = GaussianDegradationConfig
    provides = frozenset({"gaussian", "gaussian_family", "snr", "stochastic", "continuous"})
    requires = {"schedule": frozenset({"alpha_bar"})}

    def __init__(self, config: ComponentConfig | None = None, *, schedule: Schedule) -> None:
        super().__init__(config, schedule=schedule)
        self.tables = GaussianTables(schedule.values())

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = self.sample_noise(x0)
        return (self.tables.bcast("sqrt_alpha_bar", t, x0) * x0
                + self.tables.bcast("sqrt_one_minus", t, x0) * noise)

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return randn(x0.shape, generator, x0.device, x0.dtype)

    def estimate_noise(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """ε = (x_t - sqrt(ᾱ_t)·x̂0) / sqrt(1 - ᾱ_t); zeros at t = 0."""
        return ((x_t - self.tables.bcast("sqrt_alpha_bar", t, x_t) * x0_hat)
                * self.tables.bcast("inv_sqrt_one_minus", t, x_t))

    def snr(self, t: Tensor) -> Tensor:
        """ᾱ_t / (1 - ᾱ_t), float64 (inf at t = 0)."""
        return self.tables.at("snr", t)

    def posterior(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q(x_s | x_t, x0) for s < t, float64 [B] each: (coef_x0, coef_xt, β̃, β) with mean
        coef_x0·x0 + coef_xt·x_t and variance β̃ ("fixed small") or 1 - ᾱ_t/ᾱ_s ("large")."""
        alpha_bar = self.tables.table("alpha_bar", t.device)
        return posterior_coefficients(alpha_bar[t], alpha_bar[s])
