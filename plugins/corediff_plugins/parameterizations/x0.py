"""x0-prediction: the network predicts the clean image (Ho et al. 2020, Sec. 3.2 discuss it;
Bansal et al. 2022, "Cold Diffusion", eq. 2 train every degradation this way). Works with
deterministic degradations too: ε̂ is whatever the degradation's estimate_noise gives."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.interfaces import Prediction
from corediff_plugins.parameterizations.base import (
    GaussianParameterization,
    GaussianParameterizationConfig,
)


class X0ParameterizationConfig(GaussianParameterizationConfig):
    type: Literal["x0"] = "x0"


class X0Parameterization(GaussianParameterization):
    """The network predicts x0 directly."""

    Config = X0ParameterizationConfig

    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return Prediction(x0=output, eps=self.degradation.estimate_noise(x_t, output, t))

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        return x0
