"""Posterior-mean prediction: Ho et al. 2020, eq. 7 and 11 (the network predicts
μ̃_t(x_t, x0) = coef_x0·x0 + coef_xt·x_t, improved-diffusion's PREVIOUS_X), so
x̂0 = (μ̂ - coef_xt·x_t) / coef_x0 and ||μ̃ - μ̂||² = coef_x0²·||x0 - x̂0||². Valid for t >= 1."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.interfaces import Prediction
from corediff_plugins.parameterizations.base import (
    GaussianParameterization,
    GaussianParameterizationConfig,
)


class MuParameterizationConfig(GaussianParameterizationConfig):
    type: Literal["mu"] = "mu"


class MuParameterization(GaussianParameterization):
    """The network predicts the mean of q(x_{t-1} | x_t, x0)."""

    Config = MuParameterizationConfig
    requires = {"degradation": frozenset({"gaussian"})}

    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        x0 = (output - self.tables.bcast("coef_xt", t, x_t) * x_t) / self.tables.bcast(
            "coef_x0", t, x_t)
        return Prediction(x0=x0, eps=self.degradation.estimate_noise(x_t, x0, t), mean=output)

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        return self.tables.posterior_mean(x0, x_t, t)

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        return self.tables.at("coef_x0", t).square()
