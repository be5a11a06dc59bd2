"""One Gaussian family: VP diffusion, flow matching and EDM as x_t = α(t)·x0 + σ(t)·ε.

Every member has public α(t), σ(t), the half log-SNR λ(t) = log(α/σ) and the inverses t(λ)
and t(σ/α); a sampler written in these terms (DDIM, Euler, Heun with churn, DPM-Solver++,
UniPC) drives any member: a flow model with DPM-Solver++, an EDM model with UniPC.

==========  ==========================  =========  =======  ==================================
member      time t                      α(t)       σ(t)     σ/α (Karras's σ, "noise level")
==========  ==========================  =========  =======  ==================================
VP          a step in [0, T] (float:    sqrt(ᾱ)    sqrt(1   sqrt((1 − ᾱ)/ᾱ), log-linear in t
            fractional, as k-diffusion)            − ᾱ)     between integer steps
flow        t ∈ [0, 1]                  1 − t      t        t/(1 − t)
EDM         t = σ ∈ [0, σ_max]          1          t        t
==========  ==========================  =========  =======  ==================================

Conventions: times and coefficients are float64 tensors (callers cast at use); t = 0 is the
clean image (α = 1, σ = 0, λ = +∞); pure noise, where σ/α = ∞ (a zero-terminal-SNR VP
schedule at T, flow at t = 1), has α = 0 and λ = −∞. The inverses clamp to the member's time
range and map λ = ±∞ to its ends exactly.

A degradation that is a member provides the capability ``"gaussian_family"`` and implements
:class:`GaussianFamily` (the three first-party ones: ``gaussian``, ``flow``, ``edm``).
:meth:`GaussianFamily.coefficients` gives (σ/α, α, σ, λ) in one call, each computed the way
that member computes it most exactly (what the solvers' :class:`corediff.maths.solvers.Node`
holds).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from corediff.maths.gaussian import _interpolate_log_sigma, step_from_sigma, ve_sigma


class GaussianFamily:
    """What a member of the Gaussian family promises (a mixin of its degradation).

    ``integer_steps``: the member's time is a step index of a model trained on integer steps
    (VP); fractional steps are still valid times. ``t_max``: where sampling starts.
    """

    integer_steps: ClassVar[bool] = False

    @property
    @abstractmethod
    def t_max(self) -> int | float: ...

    @abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(σ/α, α, σ, λ) at times t, float64 on t's device."""

    def alpha(self, t: Tensor) -> Tensor:
        """α(t), the signal coefficient of x_t (float64)."""
        return self.coefficients(t)[1]

    def sigma(self, t: Tensor) -> Tensor:
        """σ(t), the noise coefficient of x_t (float64)."""
        return self.coefficients(t)[2]

    def lambda_(self, t: Tensor) -> Tensor:
        """λ(t) = log(α/σ), the half log-SNR: +∞ at t = 0, −∞ where α = 0 (float64)."""
        return self.coefficients(t)[3]

    def noise_level(self, t: Tensor) -> Tensor:
        """σ(t)/α(t) = e^{−λ}: Karras et al.'s σ, the noise level of x_t/α (float64)."""
        return self.coefficients(t)[0]

    @abstractmethod
    def t_from_sigma(self, noise_level: Tensor) -> Tensor:
        """The time whose σ/α is ``noise_level`` (clamped to the member's range; float64)."""

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        """The time whose λ is ``lam`` (the inverse of :meth:`lambda_`; float64)."""
        return self.t_from_sigma(torch.exp(-lam.double()))

    def sigma_range(self) -> tuple[float, float]:
        """(smallest, largest) σ/α over the times a model of this member was trained at: the
        ends of a Karras grid (Karras et al. 2022, eq. 5)."""
        raise NotImplementedError

    def default_rho(self) -> float:
        """ρ of this member's Karras grids (EDM: its schedule's ρ; others 7)."""
        return 7.0


def is_family(obj: object) -> bool:
    """Whether ``obj`` (a degradation) is a member of the Gaussian family."""
    return isinstance(obj, GaussianFamily)


class VPFamily(GaussianFamily):
    """VP diffusion on a schedule ᾱ_0..ᾱ_T (:mod:`corediff.maths.gaussian`); times are steps,
    fractional ones log-σ-interpolated (k-diffusion's ``DiscreteSchedule``)."""

    integer_steps = True

    def _alpha_bar(self) -> Tensor:
        return self.schedule.values()  # type: ignore[attr-defined]

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        alpha_bar = self._alpha_bar()
        log_sigma = ve_sigma(alpha_bar.double()[1:]).log().to(t.device)
        level = _interpolate_log_sigma(t, log_sigma)
        alpha = (1 + level.square()).rsqrt()
        sigma = torch.where(level.isinf(), 1.0, level * alpha)
        return level, alpha, sigma, -level.log()

    def t_from_sigma(self, noise_level: Tensor) -> Tensor:
        steps = step_from_sigma(noise_level, self._alpha_bar())
        return torch.where(noise_level == 0, 0.0, steps)

    def sigma_range(self) -> tuple[float, float]:
        table = ve_sigma(self._alpha_bar().double()[1:])
        return float(table[0]), float(table[-1])


class FlowFamily(GaussianFamily):
    """Flow matching's straight path (:mod:`corediff.maths.flow`): α = 1 − t, σ = t."""

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = t.double()
        alpha = 1 - t
        level = torch.where(alpha > 0, t / alpha, math.inf)
        return level, alpha, t, torch.log(alpha) - torch.log(t)

    def t_from_sigma(self, noise_level: Tensor) -> Tensor:
        level = noise_level.double().clamp_min(0)
        return torch.where(level.isinf(), 1.0, level / (1 + level))

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam.double())


class EDMFamily(GaussianFamily):
    """EDM (Karras et al. 2022, s(t) = 1, σ(t) = t, :mod:`corediff.maths.edm`): α = 1, σ = t."""

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = t.double()
        return t, torch.ones_like(t), t, -t.log()

    def t_from_sigma(self, noise_level: Tensor) -> Tensor:
        return noise_level.double().clamp_min(0)

    def sigma_range(self) -> tuple[float, float]:
        config = self.schedule.config  # type: ignore[attr-defined]
        return float(config.sigma_min), float(config.sigma_max)

    def default_rho(self) -> float:
        return float(self.schedule.config.rho)  # type: ignore[attr-defined]
