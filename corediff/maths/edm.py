"""EDM maths, public and documented: Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models".

Notation: σ the noise level, x_σ = x0 + σ·ε (eq. 2 with s(t) = 1, σ(t) = t), σ_d the data's
standard deviation. The denoiser is preconditioned as (Table 1, eq. 7)

    D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)),
    c_skip = σ_d²/(σ² + σ_d²),  c_out = σ·σ_d/sqrt(σ² + σ_d²),  c_in = 1/sqrt(σ² + σ_d²),
    c_noise = ¼·ln σ,

trained with the loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out² on ||D − x0||², which
makes the network's own loss ||F − F_target||² unweighted (eq. 8). Samplers visit the Karras
grid (eq. 5, :func:`sigma_steps`), configured by :class:`KarrasGridConfig`. Everything is
float64 on the tensors' device; callers cast at use.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveFloat
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.maths.gaussian import karras_sigmas


def preconditioning(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of Table 1 at σ (float64; c_noise = −inf at σ = 0)."""
    sigma = sigma.double()
    total = sigma.square() + sigma_data**2
    return (sigma_data**2 / total, sigma * sigma_data * total.rsqrt(), total.rsqrt(),
            0.25 * sigma.log())


def loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (Table 1), the x0-space weight; equals 1/c_out² (float64)."""
    sigma = sigma.double()
    return (sigma.square() + sigma_data**2) / (sigma * sigma_data).square()


def sigma_steps(
    count: int, sigma_min: float, sigma_max: float, rho: float, start: float | None = None
) -> list[float]:
    """The σ a sampler visits, descending: the ``count`` Karras levels from σ_max to σ_min
    (eq. 5, ends exact), the final 0 left out. With ``start`` (x lives at σ = start) start is
    visited first, then the levels below it (as :func:`corediff.maths.timesteps.visited_steps`)."""
    grid = karras_sigmas(count, sigma_min, sigma_max, rho).tolist()
    grid[0], grid[-1] = float(sigma_max), (float(sigma_min) if count > 1 else float(sigma_max))
    if start is None:
        return grid
    return [float(start)] + [s for s in grid if s < start]


class KarrasGridConfig(ComponentConfig):
    """Config fields of a sampler on the Karras grid (EDM Euler, Heun, third-party solvers):
    derive a sampler's Config from it and call :func:`sampler_sigmas`."""

    steps: StepCount = Field(18, description="N, the noise levels visited (EDM: 18).")
    rho: PositiveFloat = Field(7.0, description="ρ of the Karras grid (eq. 5).")
    sigma_min: PositiveFloat | None = Field(
        None, description="Lowest level visited (None: the schedule's sigma_min).")
    sigma_max: PositiveFloat | None = Field(
        None, description="Highest level visited (None: the degradation's t_max = σ_max).")


def sampler_sigmas(config: KarrasGridConfig, degradation: Any,
                   start: float | None = None) -> list[float]:
    """:func:`sigma_steps` for a :class:`KarrasGridConfig` and a degradation providing
    "sigma_time" (its schedule's sigma_min and its t_max fill the fields left None)."""
    sigma_min = config.sigma_min or degradation.schedule.config.sigma_min
    sigma_max = config.sigma_max or degradation.t_max
    return sigma_steps(config.steps, sigma_min, sigma_max, config.rho, start)
