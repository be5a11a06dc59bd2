"""Gaussian diffusion maths, public and documented (DDPM, Ho et al. 2020; DDIM, Song et al.
2021; Improved DDPM, Nichol & Dhariwal 2021).

Notation: β_1..β_T the schedule, ᾱ_t = prod_{s<=t} (1 - β_s) with ᾱ_0 = 1,
α_t = sqrt(ᾱ_t), σ_t = sqrt(1 - ᾱ_t) (variance preserving: α_t² + σ_t² = 1),
x_t = α_t·x0 + σ_t·ε, SNR(t) = α_t² / σ_t², and the velocity v = α_t·ε − σ_t·x0.

What a degradation providing the capability "gaussian" promises is exactly this: its
schedule's ``values()`` is ᾱ_0..ᾱ_T and every formula here applies. Schedule maths is float64
on the host; callers cast at use. :class:`GaussianTables` holds the per-step tables on each
device; the conversion functions take coefficients already shaped to broadcast (see
:meth:`GaussianTables.bcast`).

Between the integer steps (continuous time, for fast ODE solvers driving a model trained on
steps) a step t ∈ [1, T] is fractional and σ(t) = sqrt((1 − ᾱ)/ᾱ), the noise level of
x_t/α_t = x0 + σ·ε, is interpolated linearly in log σ (k-diffusion's ``DiscreteSchedule``,
diffusers' ``_sigma_to_t``): :func:`sigma_at_step`, :func:`step_from_sigma`; Karras et al.'s
ρ-grid is :func:`karras_sigmas`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# --------------------------------------------------------------------------- schedules

def linear_betas(beta_start: float, beta_end: float, steps: int, *, sqrt_space: bool) -> Tensor:
    """β linear from beta_start to beta_end over ``steps``, optionally linear in sqrt(β)."""
    if sqrt_space:
        return torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)


def betas_for_alpha_bar(
    alpha_bar: Callable[[float], float], steps: int, max_beta: float = 0.999
) -> Tensor:
    """β_i = min(1 - f(i/T) / f((i-1)/T), max_beta) for a continuous ᾱ = f on [0, 1]."""
    return torch.tensor(
        [min(1 - alpha_bar(i / steps) / alpha_bar((i - 1) / steps), max_beta)
         for i in range(1, steps + 1)],
        dtype=torch.float64,
    )


def rescale_zero_terminal_snr(alpha_bar: Tensor) -> Tensor:
    """Lin et al. 2023, Algorithm 1 on ᾱ_1..ᾱ_T: keep sqrt(ᾱ_1), move sqrt(ᾱ_T) to 0."""
    root = alpha_bar.sqrt()
    first, last = root[0], root[-1]
    return ((root - last) * first / (first - last)) ** 2


# --------------------------------------------------------------------------- conversions


def alpha_sigma(alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
    """(α_t, σ_t) = (sqrt(ᾱ_t), sqrt(1 − ᾱ_t))."""
    return alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()


def snr(alpha_bar: Tensor) -> Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t) (inf at ᾱ = 1)."""
    return alpha_bar / (1.0 - alpha_bar)


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = (x_t − σ_t·ε) / α_t."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε = (x_t − α_t·x0) / σ_t."""
    return (x_t - alpha * x0) / sigma


def x0_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = α_t·x_t − σ_t·v (Salimans & Ho 2022, App. D)."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε = α_t·v + σ_t·x_t."""
    return alpha * v + sigma * x_t


def v_from(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = α_t·ε − σ_t·x0."""
    return alpha * eps - sigma * x0


# --------------------------------------------------------------------------- between steps


def ve_sigma(alpha_bar: Tensor) -> Tensor:
    """σ = sqrt((1 − ᾱ) / ᾱ): the noise level of x_t/α_t = x0 + σ·ε (0 at t = 0)."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def sigma_at_step(t: Tensor, alpha_bar: Tensor) -> Tensor:
    """σ at fractional steps t (float, clamped to [1, T]; exactly 0 stays 0), log-linear
    between the integer steps of ``alpha_bar`` [T + 1]; float64, on t's device."""
    return _interpolate_log_sigma(t, ve_sigma(alpha_bar.double()[1:]).log().to(t.device))


def _interpolate_log_sigma(t: Tensor, log_sigma: Tensor) -> Tensor:
    """:func:`sigma_at_step` from the log σ of steps 1..T (on t's device)."""
    steps = t.double().clamp(1, len(log_sigma))
    low = steps.floor().long()
    high = (low + 1).clamp_max(len(log_sigma))
    w = steps - low
    lower = log_sigma[low - 1]
    between = torch.where(w > 0, lower + w * (log_sigma[high - 1] - lower), lower)
    return torch.where(t == 0, torch.zeros_like(between), between.exp())


def step_from_sigma(sigma: Tensor, alpha_bar: Tensor) -> Tensor:
    """The fractional step t ∈ [1, T] whose σ is ``sigma`` (the inverse of
    :func:`sigma_at_step`; σ outside the schedule's range clamps to its ends); float64.

    On a zero-terminal-SNR schedule (σ_T = ∞) σ = ∞ is step T; a finite σ above σ_{T−1}
    clamps to T − 1 (the log-σ interpolation is ∞ everywhere between them)."""
    log_sigma = ve_sigma(alpha_bar.double()[1:]).log().to(sigma.device)
    target = sigma.double().log().clamp(log_sigma[0], log_sigma[-1])
    high = torch.searchsorted(log_sigma, target).clamp(1, len(log_sigma) - 1)
    low = high - 1
    w = (target - log_sigma[low]) / (log_sigma[high] - log_sigma[low])
    steps = low + 1 + w.clamp(0, 1)
    if bool(log_sigma[-1].isinf()):
        steps = torch.where(target.isinf(), float(len(log_sigma)), steps)
    return steps


def karras_sigmas(count: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: ``count`` noise levels from σ_max down to σ_min,
    (σ_max^(1/ρ) + i/(n − 1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ; float64, without the final 0."""
    ramp = torch.linspace(0, 1, count, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (high + ramp * (low - high)) ** rho


# --------------------------------------------------------------------------- posterior


def posterior_coefficients(
    alpha_bar_t: Tensor, alpha_bar_s: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q(x_s | x_t, x0) for s < t (DDPM eq. 6-7 with β_{t|s} = 1 - ᾱ_t / ᾱ_s).

    Returns (coef_x0, coef_xt, variance_small, variance_large): the mean is
    coef_x0·x0 + coef_xt·x_t, the variance β̃ ("fixed small") or β_{t|s} ("fixed large").
    """
    beta = 1.0 - alpha_bar_t / alpha_bar_s
    one_minus_t = 1.0 - alpha_bar_t
    coef_x0 = alpha_bar_s.sqrt() * beta / one_minus_t
    coef_xt = (1.0 - beta).sqrt() * (1.0 - alpha_bar_s) / one_minus_t
    return coef_x0, coef_xt, (1.0 - alpha_bar_s) / one_minus_t * beta, beta


class GaussianTables:
    """Per-step float64 tables derived from ᾱ, cached per device and gathered by t.

    Posterior entries describe the one-step q(x_{t-1} | x_t, x0) and are meaningful for t >= 1.
    """

    def __init__(self, alpha_bar: Tensor) -> None:
        alpha_bar = alpha_bar.double()
        prev = torch.cat([alpha_bar[:1], alpha_bar[:-1]])
        coef_x0, coef_xt, var_small, var_large = posterior_coefficients(alpha_bar, prev)
        one_minus = 1.0 - alpha_bar
        alpha, sigma = alpha_sigma(alpha_bar)
        # log β̃ clipped at t = 1 (where β̃ = 0) to β̃_2 as improved-diffusion (β_1 if T = 1).
        second = var_small[2:3] if alpha_bar.numel() > 2 else var_large[1:2]
        clipped = torch.cat([var_small[:1], second, var_small[2:]])
        self._host = {
            "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha,
            "sqrt_one_minus": sigma,
            "inv_sqrt_one_minus": torch.where(one_minus > 0, one_minus.rsqrt(), 0.0),
            "snr": snr(alpha_bar),
            "coef_x0": coef_x0,
            "coef_xt": coef_xt,
            "log_variance_min": clipped.log(),
            "log_variance_max": var_large.log(),
            "log_sigma": torch.cat([alpha_bar.new_full((1,), -math.inf),
                                    ve_sigma(alpha_bar[1:]).log()]),
        }
        self._cache: dict[torch.device, dict[str, Tensor]] = {}

    def table(self, name: str, device: torch.device) -> Tensor:
        """The float64 table ``name`` [T + 1] on ``device``."""
        if device not in self._cache:
            self._cache[device] = {k: v.to(device) for k, v in self._host.items()}
        return self._cache[device][name]

    def at(self, name: str, t: Tensor) -> Tensor:
        """Table ``name`` at steps t: float64 [B] on t's device. A float t may be fractional
        (see :func:`sigma_at_step`) for the marginal entries (alpha_bar, sqrt_alpha_bar,
        sqrt_one_minus, inv_sqrt_one_minus, snr); the posterior ones need integer steps."""
        if not t.is_floating_point():
            return self.table(name, t.device)[t]
        sigma = _interpolate_log_sigma(t, self.table("log_sigma", t.device)[1:])
        alpha = (1.0 + sigma.square()).rsqrt()  # 1 at σ = 0, 0 at σ = ∞
        sigma_vp = torch.where(sigma.isinf(), 1.0, sigma * alpha)  # sqrt(1 − ᾱ)
        marginal = {
            "alpha_bar": alpha.square(), "sqrt_alpha_bar": alpha, "sqrt_one_minus": sigma_vp,
            "inv_sqrt_one_minus": torch.where(sigma_vp > 0, sigma_vp.reciprocal(), 0.0),
            "snr": sigma.square().reciprocal(),
        }
        if name not in marginal:
            raise ValueError(f"GaussianTables: '{name}' is defined at integer steps only")
        return marginal[name]

    def bcast(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at steps t, cast to like's dtype and shaped to broadcast over it."""
        return self.at(name, t).to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def alpha(self, t: Tensor, like: Tensor) -> Tensor:
        """α_t = sqrt(ᾱ_t) at steps t, shaped and cast to broadcast over ``like``."""
        return self.bcast("sqrt_alpha_bar", t, like)

    def sigma(self, t: Tensor, like: Tensor) -> Tensor:
        """σ_t = sqrt(1 − ᾱ_t) at steps t, shaped and cast to broadcast over ``like``."""
        return self.bcast("sqrt_one_minus", t, like)

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x0)."""
        return self.bcast("coef_x0", t, x0) * x0 + self.bcast("coef_xt", t, x_t) * x_t


def log_gaussian_cdf_bins(x0: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log-likelihood of 8-bit x0 in [-1, 1] under a discretized N(mean, e^{2·log_scale})
    (Ho et al. 2020, eq. 13), in nats per element."""
    inv_std = torch.exp(-log_scale)

    def cdf(z: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))

    centred = x0 - mean
    cdf_plus = cdf(inv_std * (centred + 1.0 / 255))
    cdf_minus = cdf(inv_std * (centred - 1.0 / 255))
    tiny = 1e-12
    return torch.where(
        x0 < -0.999,
        cdf_plus.clamp_min(tiny).log(),
        torch.where(
            x0 > 0.999,
            (1.0 - cdf_minus).clamp_min(tiny).log(),
            (cdf_plus - cdf_minus).clamp_min(tiny).log(),
        ),
    )
