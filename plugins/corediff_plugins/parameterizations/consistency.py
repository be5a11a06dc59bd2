"""The consistency-model parameterization: Song et al. 2023, "Consistency Models", App. C
(and Song & Dhariwal 2023, §3): f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)) with
c_skip = σ_d²/((σ − σ_min)² + σ_d²) and c_out = (σ − σ_min)·σ_d/sqrt(σ² + σ_d²), so that
f(x, σ_min) = x (the boundary condition); c_in and c_noise are EDM's (Table 1). x̂0 = f, as
the consistency objectives and the ``consistency`` sampler read it. Its regression target
(x0 − c_skip·x)/c_out is EDM's with these scalings (undefined at σ = σ_min)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.maths.consistency import boundary_scalings
from corediff.maths.edm import preconditioning
from corediff_plugins.parameterizations.edm import (
    EDMParameterization,
    EDMParameterizationConfig,
)


class ConsistencyParameterizationConfig(EDMParameterizationConfig):
    type: Literal["consistency"] = "consistency"  # type: ignore[assignment]
    sigma_min: PositiveFloat = Field(
        0.002, description="σ_min, where f(x, σ_min) = x (the schedule's lowest level).")


class ConsistencyParameterization(EDMParameterization):
    """EDM's preconditioning with the boundary scalings c_skip, c_out of CM App. C."""

    Config = ConsistencyParameterizationConfig

    def _c(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg = self.config
        _, _, c_in, c_noise = preconditioning(t, cfg.sigma_data)
        return (*boundary_scalings(t, cfg.sigma_data, cfg.sigma_min), c_in, c_noise)

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        """1/c_out² (float64; inf at σ_min)."""
        return self._c(t)[1].square().reciprocal()
