"""EDM preconditioning: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and eq. 7: D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x;
c_noise(σ)) with c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/sqrt(σ² + σ_d²),
c_in = 1/sqrt(σ² + σ_d²), c_noise = ¼·ln σ; the network F regresses
F_target = (x0 − c_skip·x)/c_out, so ||F − F_target||² = ||D − x0||²/c_out² (eq. 8).

corediff's networks embed their time value sinusoidally with periods made for steps 0..1000,
where ¼·ln σ ∈ [−1.6, 1.1] moves only the fastest few frequencies; ``noise_scale`` multiplies
c_noise. The paper's 1 trains well: on recipes/edm_digits.toml, 250 (a DDPM-like range)
lowered the final loss by 2 % (0.150 against 0.154) with indistinguishable samples."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Parameterization, Prediction
from corediff.maths.edm import loss_weight, preconditioning


class EDMParameterizationConfig(ComponentConfig):
    type: Literal["edm"] = "edm"
    sigma_data: PositiveFloat = Field(0.5, description="σ_d, the data's standard deviation.")
    noise_scale: PositiveFloat = Field(
        1.0, description="Factor on c_noise = ¼·ln σ, the network's time value (1: the paper).")


def _bcast(c: Tensor, like: Tensor) -> Tensor:
    return c.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class EDMParameterization(Parameterization):
    """The network is F of eq. 7; x̂0 = D = c_skip·x + c_out·F."""

    Config = EDMParameterizationConfig
    requires = {"degradation": frozenset({"sigma_time"})}

    def _c(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return preconditioning(t, self.config.sigma_data)

    def condition(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        _, _, c_in, c_noise = self._c(t)
        return _bcast(c_in, x_t) * x_t, (self.config.noise_scale * c_noise).to(x_t.dtype)

    def predict(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        c_skip, c_out, _, _ = self._c(t)
        denoised = _bcast(c_skip, x_t) * x_t + _bcast(c_out, x_t) * output
        sigma = _bcast(t.double(), x_t)
        eps = torch.where(sigma > 0, (x_t - denoised) / sigma, torch.zeros_like(x_t))
        return Prediction(x0=denoised, eps=eps)

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        c_skip, c_out, _, _ = self._c(t)
        return (x0 - _bcast(c_skip, x0) * x_t) / _bcast(c_out, x0)

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        """1/c_out² = (σ² + σ_d²)/(σ·σ_d)² (float64)."""
        return loss_weight(t, self.config.sigma_data)
