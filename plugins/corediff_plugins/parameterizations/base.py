"""Base shared by the first-party Gaussian parameterizations eps / x0 / mu / v (their maths is
public in :mod:`corediff.maths.gaussian`).

Subclasses turn the mean channels of the network output into a Prediction
(:meth:`GaussianParameterization.interpret`); this base adds Improved DDPM's learned-range
variance and L_hybrid (Nichol & Dhariwal 2021, eq. 15-16).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Parameterization, Prediction
from corediff.maths.gaussian import GaussianTables, log_gaussian_cdf_bins


class GaussianParameterizationConfig(ComponentConfig):
    """Fields shared by the eps / x0 / mu / v parameterizations."""

    variance: Literal["fixed", "learned_range"] = Field(
        "fixed",
        description="'fixed': the sampler picks the variance; 'learned_range': the network also "
        "outputs v in [-1, 1] interpolating log β̃_t .. log β_t (Nichol & Dhariwal 2021, eq. 15).",
    )
    vlb_weight: float = Field(
        0.001, ge=0, description="λ of L_hybrid = L_simple + λ·L_vlb (learned_range only)."
    )


class GaussianParameterization(Parameterization):
    """Base of the Gaussian parameterizations: subclasses turn the mean channels of the
    output into a Prediction; this class adds the learned-range variance and L_hybrid."""

    def __init__(self, config: ComponentConfig | None = None, *, degradation: Degradation) -> None:
        super().__init__(config, degradation=degradation)
        gaussian = "gaussian" in degradation.provides
        self.tables = GaussianTables(degradation.schedule.values()) if gaussian else None
        if self.learned and self.tables is None:
            raise ValueError("variance = 'learned_range' needs a Gaussian degradation")

    @property
    def learned(self) -> bool:
        return self.config.variance == "learned_range"  # type: ignore[attr-defined]

    @abstractmethod
    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """x̂0 (and ε̂, the mean where defined) from the mean channels of the output."""

    def output_channels(self, image_channels: int) -> int:
        return 2 * image_channels if self.learned else image_channels

    def predict(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        if not self.learned:
            return self.interpret(output, x_t, t)
        output, v = output.chunk(2, dim=1)
        prediction = self.interpret(output, x_t, t)
        prediction.log_variance = self._log_variance(v, t)
        return prediction

    def _log_variance(self, v: Tensor, t: Tensor) -> Tensor:
        assert self.tables is not None
        frac = (v + 1) / 2
        low = self.tables.bcast("log_variance_min", t, v)
        high = self.tables.bcast("log_variance_max", t, v)
        return frac * high + (1 - frac) * low

    def loss(
        self,
        output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        noise: Tensor | None,
        per_element: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        """L_simple, plus λ·T·L_t for learned_range (the uniform-t estimate of λ·L_vlb)
        with the mean channels detached, so L_vlb trains only the variance."""
        if not self.learned:
            return super().loss(output, x0, x_t, t, noise, per_element)
        mean_out, v = output.chunk(2, dim=1)
        simple = per_element(mean_out, self.target(x0, x_t, t, noise)).flatten(1).mean(1)
        vlb = self._vlb_term(mean_out.detach(), v, x0, x_t, t)
        return simple + self.config.vlb_weight * self.degradation.steps * vlb  # type: ignore

    def _vlb_term(self, mean_out: Tensor, v: Tensor, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """L_t in bits per dimension: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 1, the
        discretized decoder NLL at t = 1 (Ho et al. 2020, eq. 5 and 13)."""
        assert self.tables is not None
        prediction = self.interpret(mean_out, x_t, t)
        mean = self.tables.posterior_mean(prediction.x0, x_t, t)
        log_var = self._log_variance(v, t)
        true_mean = self.tables.posterior_mean(x0, x_t, t)
        true_log_var = self.tables.bcast("log_variance_min", t, x0)
        kl = 0.5 * (
            -1.0 + log_var - true_log_var + torch.exp(true_log_var - log_var)
            + (true_mean - mean).square() * torch.exp(-log_var)
        )
        nll = -log_gaussian_cdf_bins(x0, mean, 0.5 * log_var)
        kl, nll = (term.flatten(1).mean(1) / math.log(2.0) for term in (kl, nll))
        return torch.where(t == 1, nll, kl)
