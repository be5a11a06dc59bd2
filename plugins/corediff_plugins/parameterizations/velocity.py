"""Velocity prediction for flow matching: Lipman et al. 2023, "Flow Matching for Generative
Modeling", eq. 23 (σ_min = 0); Liu et al. 2023, "Flow Straight and Fast", eq. 1; SD3 (Esser et
al. 2024, §2): the network predicts v = dx_t/dt = ε − x0 of x_t = (1 − t)·x0 + t·ε, so
x̂0 = x_t − t·v̂, ε̂ = x_t + (1 − t)·v̂ and ||v − v̂||² = ||x0 − x̂0||² / t²."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Parameterization, Prediction
from corediff.maths.flow import eps_from_velocity, velocity_from, x0_from_velocity

#: Smallest t in the x0 loss scale 1 / t² (finite at t = 0).
T_MIN = 1e-5


class VelocityParameterizationConfig(ComponentConfig):
    type: Literal["velocity"] = "velocity"
    time_scale: PositiveFloat = Field(
        1000.0, description="The network's time value is time_scale·t (SD3 / diffusers: 1000·σ, "
        "the range the sinusoidal embeddings of unet and dit are built for).")


class VelocityParameterization(Parameterization):
    """The network predicts the flow's velocity v = ε − x0 at time value time_scale·t."""

    Config = VelocityParameterizationConfig
    requires = {"degradation": frozenset({"flow_path"})}

    def condition(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x_t, self.config.time_scale * t  # type: ignore[attr-defined]

    def predict(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return Prediction(x0=x0_from_velocity(x_t, output, t),
                          eps=eps_from_velocity(x_t, output, t))

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        assert noise is not None, "velocity prediction trains on the sampled noise"
        return velocity_from(x0, noise)

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        """1 / t² (t clamped to T_MIN)."""
        return t.double().clamp_min(T_MIN).square().reciprocal()
