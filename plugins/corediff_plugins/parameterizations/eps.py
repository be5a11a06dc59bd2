"""ε-prediction: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 11-14:
x̂0 = (x_t - sqrt(1 - ᾱ_t)·ε̂) / sqrt(ᾱ_t), target ε, ||ε - ε̂||² = snr_t·||x0 - x̂0||².

Refused in a recipe with a schedule whose ᾱ_T = 0 (zero terminal SNR; Lin et al. 2023,
"Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.2, switch to v-prediction
for it): x̂0 would divide by sqrt(ᾱ_T) = 0 at t = T and sampling would give NaN."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Prediction
from corediff.maths.gaussian import x0_from_eps
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

    @classmethod
    def check_recipe(cls, config: ComponentConfig, others: Mapping[str, Any]) -> list[str]:
        schedule_cls, schedule_config = others["schedule"]
        if schedule_cls(schedule_config).values()[-1] == 0:
            return ["ε-prediction cannot predict x0 where ᾱ_T = 0 (zero terminal SNR, e.g. "
                    "rescale_zero_terminal_snr = true): use v- or x0-prediction"]
        return []

    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        alpha, sigma = self.tables.alpha(t, x_t), self.tables.sigma(t, x_t)
        return Prediction(x0=x0_from_eps(x_t, output, alpha, sigma), eps=output)

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        assert noise is not None, "ε-prediction trains on the sampled noise"
        return noise

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        return self.tables.at("snr", t)
