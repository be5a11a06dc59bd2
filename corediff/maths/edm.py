"""EDM maths, public and documented: Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models".

Notation: σ the noise level, x_σ = x0 + σ·ε (eq. 2 with s(t) = 1, σ(t) = t), σ_d the data's
standard deviation. The denoiser is preconditioned as (Table 1, eq. 7)

    D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)),
    c_skip = σ_d²/(σ² + σ_d²),  c_out = σ·σ_d/sqrt(σ² + σ_d²),  c_in = 1/sqrt(σ² + σ_d²),
    c_noise = ¼·ln σ,

trained with the loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out² on ||D − x0||², which
makes the network's own loss ||F − F_target||² unweighted (eq. 8). Samplers visit the Karras
grid (eq. 5, :func:`sigma_steps`, ρ the schedule's), configured by the family solvers'
:class:`corediff.maths.solvers.SolverGridConfig`. Everything is
float64 on the tensors' device; callers cast at use.
"""

from __future__ import annotations

from torch import Tensor

from corediff.maths.gaussian import karras_sigmas
from corediff.maths.timesteps import visit_from


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
    visited first, then the levels below it (:func:`corediff.maths.timesteps.visit_from`)."""
    grid = karras_sigmas(count, sigma_min, sigma_max, rho).tolist()
    grid[0], grid[-1] = float(sigma_max), (float(sigma_min) if count > 1 else float(sigma_max))
    return visit_from(grid, None if start is None else float(start), float(sigma_max))
