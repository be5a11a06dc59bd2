"""v-prediction: Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
Models", Sec. 4 / App. D: v = sqrt(ᾱ)·ε - sqrt(1 - ᾱ)·x0, x̂0 = sqrt(ᾱ)·x_t - sqrt(1 - ᾱ)·v̂,
||v - v̂||² = (snr + 1)·||x0 - x̂0||²."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.interfaces import Prediction
from corediff.maths.gaussian import eps_from_v, v_from, x0_from_v
from corediff_plugins.parameterizations.base import (
    GaussianParameterization,
    GaussianParameterizationConfig,
)


class VParameterizationConfig(GaussianParameterizationConfig):
    type: Literal["v"] = "v"


class VParameterization(GaussianParameterization):
    """The network predicts the velocity v."""

    Config = VParameterizationConfig
    requires = {"degradation": frozenset({"gaussian"})}

    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        alpha, sigma = self.tables.alpha(t, x_t), self.tables.sigma(t, x_t)
        return Prediction(x0=x0_from_v(x_t, output, alpha, sigma),
                          eps=eps_from_v(x_t, output, alpha, sigma))

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        assert noise is not None, "v-prediction trains on the sampled noise"
        return v_from(x0, noise, self.tables.alpha(t, x0), self.tables.sigma(t, x0))

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        return self.tables.at("snr", t) + 1
