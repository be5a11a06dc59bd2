"""Closed forms on Gaussian data, the oracle of :mod:`corediff.testing`'s sampler checks.

Data x0 ~ N(μ, s²) per pixel (μ, s fixed per channel) through any member of the Gaussian
family x_t = α(t)·x0 + σ(t)·ε (variance preserving, flow matching, EDM) has, per pixel:

* the exact denoiser (posterior mean) E[x0 | x_t] = μ + α·s² / (α²·s² + σ²) · (x_t − α·μ);
* the marginal x_t ~ N(α·μ, α²·s² + σ²);
* the exact probability-flow ODE path through x_T (Song et al. 2021, "Score-Based Generative
  Modeling through SDEs", eq. 13, solved in closed form for Gaussian data: the normalised
  deviation z = (x_t − α·μ) / sqrt(α²·s² + σ²) is constant along it):
  x(t) = α(t)·μ + sqrt(α(t)²·s² + σ(t)²) · z.

α(t) and σ(t) are read from the degradation itself (it is linear: α = D(1, t, 0),
σ = D(0, t, 1)), so any degradation of this family is covered through its public
``degrade``, and :func:`gaussian_family` tells whether a degradation is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from corediff.denoiser import Denoiser
from corediff.interfaces import steps_like

#: Per-channel mean μ and standard deviation s of the Gaussian data (3 channels): within
#: [-1, 1] to 3.5 s (x̂0 along the exact path too), so that a sampler clipping x̂0 to the
#: image range follows the ODE as well.
MEAN = (-0.15, 0.0, 0.1)
STD = (0.2, 0.25, 0.22)


def moments(like: Tensor) -> tuple[Tensor, Tensor]:
    """(μ, s) shaped [1, 3, 1, 1] in ``like``'s dtype and device."""
    shape = (1, len(MEAN), 1, 1)
    return (torch.tensor(MEAN, dtype=like.dtype, device=like.device).view(shape),
            torch.tensor(STD, dtype=like.dtype, device=like.device).view(shape))


def coefficients(degradation: Any, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(α(t), σ(t)) broadcast like ``like`` (t [B]), probed through ``degrade``."""
    ones, zeros = torch.ones_like(like), torch.zeros_like(like)
    return degradation.degrade(ones, t, zeros), degradation.degrade(zeros, t, ones)


def gaussian_family(degradation: Any) -> bool:
    """Whether ``degradation`` is x_t = α(t)·x0 + σ(t)·ε with scalar α, σ (float64, checked
    on random x0 and ε at three times)."""
    if "stochastic" not in degradation.provides:
        return False
    generator = torch.Generator().manual_seed(11)
    x0, eps = (torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
               for _ in range(2))
    t_max = degradation.t_max
    for t in ((1, t_max // 2, t_max) if isinstance(t_max, int) else
              (0.1 * t_max, 0.5 * t_max, float(t_max))):
        t_batch = steps_like(t, x0)
        alpha, sigma = coefficients(degradation, t_batch, x0)
        expected = alpha * x0 + sigma * eps
        if not torch.isfinite(expected).all() or not torch.allclose(
                degradation.degrade(x0, t_batch, eps), expected, rtol=1e-9, atol=1e-12):
            return False
    return True


def exact_x0(degradation: Any, x_t: Tensor, t: Tensor) -> Tensor:
    """E[x0 | x_t] at times t [B] (x_t itself where α = 1, σ = 0)."""
    mean, std = moments(x_t)
    alpha, sigma = coefficients(degradation, t, x_t)
    return mean + alpha * std.square() / (alpha.square() * std.square() + sigma.square()) * (
        x_t - alpha * mean)


def exact_network(built: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """The network output whose prediction is the exact denoiser at any (x_t, t): the
    parameterization's target for E[x0 | x_t] (zeros for learned-variance channels, and where
    the target is not finite: where the prediction does not depend on the output, as a
    consistency model's at σ_min)."""
    param, degradation = built["parameterization"], built["degradation"]

    def network(x_t: Tensor, t: Tensor) -> Tensor:
        x0 = exact_x0(degradation, x_t, t)
        target = param.target(x0, x_t, t, degradation.estimate_noise(x_t, x0, t)).nan_to_num(
            nan=0.0, posinf=0.0, neginf=0.0)
        extra = param.output_channels(x0.shape[1]) - x0.shape[1]
        return torch.cat([target, target.new_zeros(x0.shape[0], extra, *x0.shape[2:])], 1)

    return network


def start(degradation: Any, t: int | float, count: int, size: int, seed: int) -> Tensor:
    """``count`` float64 draws [count, 3, size, size] of the marginal at time t."""
    generator = torch.Generator().manual_seed(seed)
    like = torch.empty(count, len(MEAN), size, size, dtype=torch.float64)
    mean, std = moments(like)
    x0 = mean + std * torch.randn(like.shape, generator=generator, dtype=like.dtype)
    return degradation.degrade(x0, steps_like(t, like), torch.randn(
        like.shape, generator=generator, dtype=like.dtype))


def spread(degradation: Any, t: int | float, like: Tensor) -> tuple[Tensor, Tensor]:
    """(α(t), the marginal's standard deviation sqrt(α²·s² + σ²)) broadcast like ``like``."""
    _, std = moments(like)
    alpha, sigma = coefficients(degradation, steps_like(t, like), like)
    return alpha, (alpha.square() * std.square() + sigma.square()).sqrt()


def exact_path(degradation: Any, x_T: Tensor, t_start: int | float, t: int | float) -> Tensor:
    """x(t) on the probability-flow ODE path through x_T at time ``t_start``."""
    mean, _ = moments(x_T)
    alpha_T, spread_T = spread(degradation, t_start, x_T)
    alpha, spread_t = spread(degradation, t, x_T)
    return alpha * mean + spread_t * (x_T - alpha_T * mean) / spread_T


class RawDenoiser(Denoiser):
    """A Denoiser that gives its network the raw (x_t, t), not the parameterization's
    conditioned input: what the oracles here and :func:`corediff.testing.oracle` read."""

    def output(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        self.evaluations += 1
        return self.network(x, t)


@dataclass
class PathErrors:
    """One sampling run from the exact marginal at T with the exact denoiser, against the
    exact ODE path: ``states`` (t, max |x − x*(t)| in units of the marginal's standard
    deviation) per visited state; ``final`` max |sample − x*(0)| / s; ``floor`` the same for
    the exact denoiser applied to the exact state at the last visited time (what a first-order
    last step to t = 0 gives)."""

    states: list[tuple[int | float, float]]
    final: float
    floor: float

    def worst(self) -> tuple[int | float, float]:
        """The visited state farthest from the path."""
        return max(self.states, key=lambda state: state[1])


def path_errors(sampler: Any, built: dict[str, Any], x_T: Tensor) -> PathErrors:
    """Run ``sampler`` from x_T with the exact denoiser (float64) and measure it."""
    degradation = built["degradation"]
    network = RawDenoiser(exact_network(built), built["parameterization"])
    result = sampler.sample(network, x_T, generator=torch.Generator(x_T.device).manual_seed(14),
                            trajectory=True)
    t0, (_, std) = result.trajectory[0].t, moments(x_T)
    states = []
    for step in result.trajectory:
        deviation = step.x_t - exact_path(degradation, x_T, t0, step.t)
        scale = spread(degradation, step.t, x_T)[1]
        states.append((step.t, (deviation / scale).abs().max().item()))
    clean = exact_path(degradation, x_T, t0, 0)
    last = result.trajectory[-1].t
    denoised = exact_x0(degradation, exact_path(degradation, x_T, t0, last), steps_like(last, x_T))
    return PathErrors(states, ((result.sample - clean) / std).abs().max().item(),
                      ((denoised - clean) / std).abs().max().item())


def sample_moments(sampler: Any, built: dict[str, Any], x_T: Tensor, seed: int) -> tuple[
        Tensor, Tensor]:
    """Per-channel (mean, standard deviation) of the samples from x_T (float64 [3] each)."""
    network = RawDenoiser(exact_network(built), built["parameterization"])
    sample = sampler.sample(network, x_T, generator=torch.Generator(x_T.device).manual_seed(
        seed)).sample
    per_channel = sample.transpose(0, 1).flatten(1)
    return per_channel.mean(1), per_channel.std(1)
