"""Gaussian blur degradation (Bansal et al. 2022, "Cold Diffusion", §4.1, deblurring:
x_t = G_t * x_{t−1}, t successive Gaussian convolutions).

Closed form, O(1) in t: the schedule (capability "blur_sigma") gives the effective width σ(t)
(Gaussians compose into one Gaussian whose variance is the sum) and D(x0, t) is ONE separable
linear filter. Kernels are sampled, cut at ±ceil(truncate · σ) (or to ``kernel_size`` taps)
and normalised, g_j ∝ exp(−j² / 2σ²), as in the reference code. For schedules that also
provide "blur_composed", the filter is the exact product of the t per-step kernels' transfer
functions (σ_i² = σ(i)² − σ(i−1)², a cumulative product computed once), so the reference's t
successive convolutions are reproduced exactly, even for kernels too narrow to be sampled
Gaussians; otherwise it is the single kernel of width σ(t) ('Individual_Incremental').

Along each axis the blur is an n×n matrix built from the transfer function on the periodic
extension of the signal: the signal itself for ``padding = "circular"``, its mirror image
x_0..x_{n−1}, x_{n−2}..x_1 (period 2n − 2) for ``"reflect"`` (exactly a reflect-padded
convolution while the radius is below n). So D(x0, t) = M_H(t) x0 M_W(t)ᵀ per channel, batched
over different t; D(x0, 0) = x0 exactly. ``to_mean`` replaces the blurred image at t = T by its
per-channel mean (the reference's ``discrete`` mode), the state ``channel_mean_gmm`` samples.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Schedule


class BlurConfig(ComponentConfig):
    type: Literal["blur"] = "blur"
    padding: Literal["reflect", "circular"] = Field(
        "reflect", description="Boundary handling of the convolution."
    )
    truncate: PositiveFloat = Field(
        4.0, description="Kernel radius in units of its std: taps |j| ≤ ceil(truncate · σ)."
    )
    kernel_size: PositiveInt | None = Field(
        None, description="Odd fixed kernel size as in the reference code (None: use truncate)."
    )
    to_mean: bool = Field(False, description="At t = T return the per-channel mean image.")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, kernel_size: int | None) -> int | None:
        if kernel_size is not None and kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        return kernel_size


class BlurDegradation(Degradation):
    Config = BlurConfig
    provides = frozenset({"deterministic", "blur"})
    requires = {"schedule": frozenset({"blur_sigma"})}

    def __init__(self, config: BlurConfig | None = None, *, schedule: Schedule) -> None:
        super().__init__(config, schedule=schedule)
        self._tables: dict[tuple[int, str, torch.dtype], tuple[Tensor, Tensor]] = {}

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        M_H = self.blur_matrices(x0.shape[-2], t, x0.dtype)
        M_W = self.blur_matrices(x0.shape[-1], t, x0.dtype)
        x_t = M_H[:, None] @ x0 @ M_W.transpose(-1, -2)[:, None]
        if self.config.to_mean:
            mean = x_t.mean((-2, -1), keepdim=True).expand_as(x_t)
            x_t = torch.where((t == self.steps)[:, None, None, None], mean, x_t)
        return torch.where((t == 0)[:, None, None, None], x0, x_t)

    def blur_matrices(self, n: int, t: Tensor, dtype: torch.dtype) -> Tensor:
        """[B, n, n]: row i holds the weights of output sample i along an axis of length n."""
        spectrum, transfer = self._table(n, t.device, dtype)
        length = 2 * n - 2 if self.config.padding == "reflect" and n > 1 else n
        response = torch.fft.irfft(spectrum * transfer[t][:, None, :], n=length)[..., :n]
        return response.transpose(-1, -2).to(dtype)

    def _table(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Cached per axis length: spectra of the extended unit impulses [n, L // 2 + 1] and
        the transfer functions of D(·, t) [T + 1, L // 2 + 1] (L: the extension's period)."""
        key = (n, str(device), dtype)
        if key not in self._tables:
            eye = torch.eye(n, dtype=torch.float64)
            if self.config.padding == "reflect" and n > 1:
                eye = torch.cat([eye, eye.flip(-1)[:, 1:-1]], dim=-1)
            sigma = self.schedule.values()
            if "blur_composed" in self.schedule.provides:  # per-step kernels, multiplied
                step_sigma = (sigma[1:].square() - sigma[:-1].square()).clamp_min(0).sqrt()
                transfer = self._transfer(step_sigma, eye.shape[-1]).cumprod(0)
                transfer = torch.cat([torch.ones_like(transfer[:1]), transfer])
            else:
                transfer = self._transfer(sigma, eye.shape[-1])
            wide = dtype == torch.float64
            self._tables[key] = (
                torch.fft.rfft(eye).to(device, torch.complex128 if wide else torch.complex64),
                transfer.to(device, torch.float64 if wide else torch.float32),
            )
        return self._tables[key]

    def _transfer(self, sigma: Tensor, length: int) -> Tensor:
        """DFT [len(sigma), L // 2 + 1] on a circle of ``length`` L of the sampled, truncated,
        normalised kernels g_j ∝ exp(−j² / 2σ²): g_0 + 2 Σ_{j ≥ 1} g_j cos(2π m j / L)."""
        if self.config.kernel_size is None:
            radius = (self.config.truncate * sigma - 1e-9).ceil()  # robust to σ rounding
        else:
            radius = torch.full_like(sigma, self.config.kernel_size // 2)
        j = torch.arange(int(radius.max()) + 1, dtype=torch.float64)
        taps = torch.exp(-0.5 * (j / sigma.clamp_min(1e-300)[:, None]).square())
        taps = torch.where(j <= radius[:, None], taps, 0.0)
        taps[:, 0] = 1.0
        m = torch.arange(length // 2 + 1, dtype=torch.float64)
        cosines = torch.cos(2 * math.pi * j[:, None] * m / length)
        cosines[1:] *= 2
        return (taps @ cosines) / (taps @ cosines[:, :1])
