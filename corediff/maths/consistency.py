"""Consistency-model maths, public and documented: Song et al. 2023, "Consistency Models"
(CM), and Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models" (iCT).

Notation as in EDM (:mod:`corediff.maths.edm`): x_σ = x0 + σ·ε, σ ∈ [σ_min, σ_max]. A
consistency function f(x_σ, σ) maps every point of a probability-flow trajectory to its
origin; the boundary condition f(x, σ_min) = x is built in by the scalings (CM, App. C):

    f(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)),
    c_skip = σ_d² / ((σ − σ_min)² + σ_d²),   c_out = (σ − σ_min)·σ_d / sqrt(σ² + σ_d²),

with EDM's c_in and c_noise. Training compares f at two adjacent levels σ_i < σ_{i+1} of a
Karras grid (CM eq. 5 / iCT §3): the grid of N levels, the curriculum N(k) (iCT eq. 12), the
lognormal choice of i (iCT eq. 13), the weight λ(σ_i) = 1/(σ_{i+1} − σ_i) (iCT §3.1) and
the pseudo-Huber distance (iCT eq. 11). Everything is float64; callers cast at use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from corediff.maths.gaussian import karras_sigmas


def boundary_scalings(sigma: Tensor, sigma_data: float, sigma_min: float) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out) of CM App. C at σ (float64): c_skip(σ_min) = 1, c_out(σ_min) = 0."""
    sigma = sigma.double()
    shifted = sigma - sigma_min
    c_skip = sigma_data**2 / (shifted.square() + sigma_data**2)
    c_out = shifted * sigma_data * (sigma.square() + sigma_data**2).rsqrt()
    return c_skip, c_out


def discretisation_steps(k: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 with K' = ⌊K / (log2⌊s1/s0⌋ + 1)⌋ (iCT eq. 12): the
    number of grid levels at training step k of K; doubles K' times from s0 + 1 to s1 + 1."""
    stages = math.floor(math.log2(s1 // s0)) + 1
    k_prime = max(total // stages, 1)
    return min(s0 * 2 ** (k // k_prime), s1) + 1


def training_sigmas(count: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """σ_1 < … < σ_N, the ``count`` Karras levels ascending (CM eq. 5 with the ends exact)."""
    grid = karras_sigmas(count, sigma_min, sigma_max, rho).flip(0)
    grid[0], grid[-1] = sigma_min, sigma_max
    return grid


def lognormal_level_probs(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """p(σ_i) ∝ erf((ln σ_{i+1} − P_mean)/(√2·P_std)) − erf((ln σ_i − P_mean)/(√2·P_std)),
    i = 1..N − 1 (iCT eq. 13): the lognormal mass between adjacent levels, normalised."""
    cdf = torch.erf((sigmas.double().log() - p_mean) / (math.sqrt(2) * p_std))
    mass = cdf[1:] - cdf[:-1]
    return mass / mass.sum()


def pseudo_huber(x: Tensor, y: Tensor, c: float) -> Tensor:
    """d(x, y) = sqrt(||x − y||² + c²) − c per sample (iCT eq. 11), over all but dim 0."""
    return ((x - y).square().flatten(1).sum(1) + c * c).sqrt() - c


def pseudo_huber_c(dimension: int) -> float:
    """c = 0.00054·sqrt(d) for data of d dimensions (iCT §3.3)."""
    return 0.00054 * math.sqrt(dimension)
