"""ε-prediction: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 11-14:
x̂0 = (x_t - sqrt(1 - ᾱ_t)·ε̂) / sqrt(ᾱ_t), target ε, ||ε - ε̂||² = snr_t·||x0 - x̂0||²."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.gaussian import x0_from_eps
from corediff.interfaces import Prediction
from corediff_plugins.parameterizations.base import (
    GaussianParameterization,
    GaussianParameterizationConfig,
)


class EpsParameterizationConfig(GaussianParameterizationConfig):
    type: Literal["eps"] = "eps"


class EpsParameterization(GaussianParameterization):
    """The network predicts the noise ε."""

    Config = EpsParameterizationConfig
    requires = {"degradation": frozenset({"gaussian"})}

    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        alpha, sigma = self.tables.alpha(t, x_t), self.tables.sigma(t, x_t)
        return Prediction(x0=x0_from_eps(x_t, output, alpha, sigma), eps=output)

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        assert noise is not None, "ε-prediction trains on the sampled noise"
        return noise

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        return self.tables.at("snr", t)
