"""Residual parameterization for cold degradations (Bansal et al. 2022, "Cold Diffusion", §3.1:
the restoration R(x_t, t) ≈ x0, written as x_t plus a learned correction).

x̂0 = x_t + output (the SVD notes' "x̂0 = UΣVᵀ + model_output"); target = x0 − x_t.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Parameterization, Prediction


class ResidualConfig(ComponentConfig):
    type: Literal["residual"] = "residual"


class ResidualParameterization(Parameterization):
    Config = ResidualConfig

    def predict(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return Prediction(x0=x_t + output)

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        return x0 - x_t
