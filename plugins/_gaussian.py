"""Shared math of the Gaussian diffusion plugins (DDPM, Ho et al. 2020; DDIM, Song et al. 2021).

Notation: ᾱ_t = prod_{s<=t} (1 - β_s) with ᾱ_0 = 1, x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·ε.
Everything here is float64 on the host; callers cast at use.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, PositiveInt, field_validator, model_validator
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Parameterization, Prediction, Sampler, Schedule

# --------------------------------------------------------------------------- schedules


class GaussianScheduleConfig(ComponentConfig):
    """Fields shared by every ᾱ schedule."""

    steps: PositiveInt = Field(1000, description="T, the number of diffusion steps.")
    rescale_zero_terminal_snr: bool = Field(
        False, description="Shift and scale sqrt(ᾱ) so that ᾱ_T = 0 (Lin et al. 2023, Alg. 1)."
    )


class GaussianSchedule(Schedule):
    """A schedule defined by its betas β_1..β_T; ``values()`` is ᾱ_0..ᾱ_T."""

    provides = frozenset({"alpha_bar"})

    def __init__(self, config: ComponentConfig | None = None) -> None:
        super().__init__(config)
        betas = self.betas()
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"schedule '{self.config.type}' with steps={self.steps} gives β outside (0, 1) "
                f"(max β = {betas.max().item():.4g}); use more steps or smaller β endpoints"
            )

    @abstractmethod
    def betas(self) -> Tensor:
        """float64 tensor [T]: β_1..β_T."""

    def values(self) -> Tensor:
        alpha_bar = torch.cumprod(1.0 - self.betas().double(), dim=0)
        if self.config.rescale_zero_terminal_snr:  # type: ignore[attr-defined]
            alpha_bar = rescale_zero_terminal_snr(alpha_bar)
        return torch.cat([alpha_bar.new_ones(1), alpha_bar])


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
        # log β̃ clipped at t = 1 (where β̃ = 0) to β̃_2 as improved-diffusion (β_1 if T = 1).
        second = var_small[2:3] if alpha_bar.numel() > 2 else var_large[1:2]
        clipped = torch.cat([var_small[:1], second, var_small[2:]])
        self._host = {
            "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus": one_minus.sqrt(),
            "inv_sqrt_one_minus": torch.where(one_minus > 0, one_minus.rsqrt(), 0.0),
            "snr": alpha_bar / one_minus,
            "coef_x0": coef_x0,
            "coef_xt": coef_xt,
            "log_variance_min": clipped.log(),
            "log_variance_max": var_large.log(),
        }
        self._cache: dict[torch.device, dict[str, Tensor]] = {}

    def table(self, name: str, device: torch.device) -> Tensor:
        """The float64 table ``name`` [T + 1] on ``device``."""
        if device not in self._cache:
            self._cache[device] = {k: v.to(device) for k, v in self._host.items()}
        return self._cache[device][name]

    def at(self, name: str, t: Tensor) -> Tensor:
        """Table ``name`` at steps t: float64 [B] on t's device."""
        return self.table(name, t.device)[t]

    def bcast(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at steps t, cast to like's dtype and shaped to broadcast over it."""
        return self.at(name, t).to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x0)."""
        return self.bcast("coef_x0", t, x0) * x0 + self.bcast("coef_xt", t, x_t) * x_t


# --------------------------------------------------------------------------- respacing

_SPACINGS = ("leading", "trailing", "linspace")


def space_timesteps(steps: int, count: int | None, spacing: str) -> list[int]:
    """Kept steps t (descending, in {1..T}) of a respaced run.

    ``spacing`` is diffusers' timestep_spacing ("leading", "trailing", "linspace", with
    steps_offset = 0; ``count`` None means all T) or improved-diffusion's space_timesteps
    string ("ddim50", or section counts "10,15,20"; ``count`` must be None or their total).
    diffusers' timestep k is our step k + 1.
    """
    if spacing in _SPACINGS:
        n = steps if count is None else count
        if n > steps:
            raise ValueError(f"cannot take {n} sampling steps from T = {steps}")
        if spacing == "leading":
            k = [i * (steps // n) for i in range(n)]
        elif spacing == "trailing":
            k = [round(steps - i * steps / n) - 1 for i in range(n)]
        else:
            k = [round(i * (steps - 1) / (n - 1)) if n > 1 else 0 for i in range(n)]
        kept = {i + 1 for i in k}
    elif spacing.startswith("ddim"):
        n = int(spacing[4:])
        stride = next((i for i in range(1, steps) if len(range(0, steps, i)) == n), None)
        if stride is None:
            raise ValueError(f"cannot take exactly {n} evenly strided steps from T = {steps}")
        kept = {i + 1 for i in range(0, steps, stride)}
    else:
        kept = {i + 1 for i in _section_steps(steps, [int(c) for c in spacing.split(",")])}
    if count is not None and spacing not in _SPACINGS and count != len(kept):
        raise ValueError(f"steps = {count} contradicts spacing '{spacing}' ({len(kept)} steps)")
    return sorted(kept, reverse=True)


def _section_steps(steps: int, counts: list[int]) -> list[int]:
    """improved-diffusion's sections: T split into len(counts) near-equal parts, each
    sampled at ``count`` evenly spaced (rounded) indices including both ends."""
    size, extra = divmod(steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if not 0 < count <= length:
            raise ValueError(f"cannot take {count} steps from a section of {length}")
        stride = 1.0 if count == 1 else (length - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += length
    return kept


class RespacedSamplerConfig(ComponentConfig):
    """Fields shared by the DDPM and DDIM samplers."""

    steps: PositiveInt | None = Field(
        None, description="Sampling steps (None: all T, or the count the spacing string gives)."
    )
    spacing: str = Field(
        "trailing",
        description="diffusers' 'leading' | 'trailing' | 'linspace', or improved-diffusion's "
        "'ddimN' / section counts '10,15,20'.",
    )
    clip_x0: bool = Field(False, description="Clamp x̂0 to [-1, 1] at every step.")

    @field_validator("spacing")
    @classmethod
    def _check_spacing(cls, spacing: str) -> str:
        if spacing in _SPACINGS or re.fullmatch(r"ddim[1-9]\d*|[1-9]\d*(,[1-9]\d*)*", spacing):
            return spacing
        raise ValueError(f"unknown spacing '{spacing}'")

    @model_validator(mode="after")
    def _check_steps(self) -> RespacedSamplerConfig:
        if self.steps is None or self.spacing in _SPACINGS:
            return self
        digits = self.spacing.removeprefix("ddim").split(",")
        if self.steps != sum(int(c) for c in digits):
            raise ValueError(f"steps = {self.steps} contradicts spacing '{self.spacing}'")
        return self


class RespacedSampler(Sampler):
    """Base of the DDPM and DDIM samplers: a Gaussian degradation and a kept subsequence of
    steps (``steps`` and ``spacing``); ``timesteps`` lists the visited ones."""

    requires = {"degradation": frozenset({"gaussian"})}

    def __init__(
        self,
        config: ComponentConfig | None = None,
        *,
        degradation: Degradation,
        parameterization: Parameterization,
    ) -> None:
        super().__init__(config, degradation=degradation, parameterization=parameterization)
        self.kept = space_timesteps(degradation.steps, self.config.steps, self.config.spacing)

    def timesteps(self, start: int | None = None) -> list[int]:
        return visited_steps(self.kept, self.degradation.steps, start)


def visited_steps(kept: list[int], steps: int, start: int | None) -> list[int]:
    """Kept steps at or below ``start``; an explicit start is always visited first.

    With start None this is diffusers' list as is ("leading" then begins below T, treating
    the prior's x_T as x at the first kept step, as diffusers does).
    """
    if start is None:
        return kept
    if not 0 < start <= steps:
        raise ValueError(f"start must lie in 1..{steps}, got {start}")
    return [start] + [t for t in kept if t < start]


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


# --------------------------------------------------------------------------- parameterizations


class GaussianParameterizationConfig(ComponentConfig):
    """Fields shared by the eps / x0 / mu / v parameterizations."""

    variance: Literal["fixed", "learned_range"] = Field(
        "fixed",
        description="'fixed': the sampler picks the variance; 'learned_range': the network also "
        "outputs v in [-1, 1] interpolating log β̃_t .. log β_t (Nichol & Dhariwal 2021, eq. 15).",
    )
    vlb_weight: float = Field(
        0.001, ge=0, description="λ of L_hybrid = L_simple + λ·L_vlb (learned_range only)."
    )


class GaussianParameterization(Parameterization):
    """Base of the Gaussian parameterizations: subclasses turn the mean channels of the
    output into a Prediction; this class adds the learned-range variance and L_hybrid."""

    def __init__(self, config: ComponentConfig | None = None, *, degradation: Degradation) -> None:
        super().__init__(config, degradation=degradation)
        gaussian = "gaussian" in degradation.provides
        self.tables = GaussianTables(degradation.schedule.values()) if gaussian else None
        if self.learned and self.tables is None:
            raise ValueError("variance = 'learned_range' needs a Gaussian degradation")

    @property
    def learned(self) -> bool:
        return self.config.variance == "learned_range"  # type: ignore[attr-defined]

    @abstractmethod
    def interpret(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """x̂0 (and ε̂, the mean where defined) from the mean channels of the output."""

    def output_channels(self, image_channels: int) -> int:
        return 2 * image_channels if self.learned else image_channels

    def predict(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        if not self.learned:
            return self.interpret(output, x_t, t)
        output, v = output.chunk(2, dim=1)
        prediction = self.interpret(output, x_t, t)
        prediction.log_variance = self._log_variance(v, t)
        return prediction

    def _log_variance(self, v: Tensor, t: Tensor) -> Tensor:
        assert self.tables is not None
        frac = (v + 1) / 2
        low = self.tables.bcast("log_variance_min", t, v)
        high = self.tables.bcast("log_variance_max", t, v)
        return frac * high + (1 - frac) * low

    def loss(
        self,
        output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        noise: Tensor | None,
        per_element: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        """L_simple, plus λ·T·L_t for learned_range (the uniform-t estimate of λ·L_vlb)
        with the mean channels detached, so L_vlb trains only the variance."""
        if not self.learned:
            return super().loss(output, x0, x_t, t, noise, per_element)
        mean_out, v = output.chunk(2, dim=1)
        simple = per_element(mean_out, self.target(x0, x_t, t, noise)).flatten(1).mean(1)
        vlb = self._vlb_term(mean_out.detach(), v, x0, x_t, t)
        return simple + self.config.vlb_weight * self.degradation.steps * vlb  # type: ignore

    def _vlb_term(self, mean_out: Tensor, v: Tensor, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """L_t in bits per dimension: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 1, the
        discretized decoder NLL at t = 1 (Ho et al. 2020, eq. 5 and 13)."""
        assert self.tables is not None
        prediction = self.interpret(mean_out, x_t, t)
        mean = self.tables.posterior_mean(prediction.x0, x_t, t)
        log_var = self._log_variance(v, t)
        true_mean = self.tables.posterior_mean(x0, x_t, t)
        true_log_var = self.tables.bcast("log_variance_min", t, x0)
        kl = 0.5 * (
            -1.0 + log_var - true_log_var + torch.exp(true_log_var - log_var)
            + (true_mean - mean).square() * torch.exp(-log_var)
        )
        nll = -log_gaussian_cdf_bins(x0, mean, 0.5 * log_var)
        kl, nll = (term.flatten(1).mean(1) / math.log(2.0) for term in (kl, nll))
        return torch.where(t == 1, nll, kl)


# --------------------------------------------------------------------------- loss weightings


class LossWeightingConfig(ComponentConfig):
    """Field shared by the loss weightings."""

    loss_type: Literal["l2", "l1"] = Field("l2", description="Element-wise loss.")


def x0_ratio(weight_x0: Tensor, scale: Tensor) -> Tensor:
    """weight_x0 / s(t): the weight on a parameterization's loss that equals weight_x0 on the
    x0 MSE. 0/0 and ∞/∞ (only at snr ∈ {0, ∞}) take the limit 1 of the snr ratios used here."""
    ratio = weight_x0 / scale
    return torch.where(ratio.isnan(), torch.ones_like(ratio), ratio)
