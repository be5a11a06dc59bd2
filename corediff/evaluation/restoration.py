"""Restoration metrics of cold degradations, as in Bansal et al. 2022 ("Cold Diffusion",
Tables 1-3): real images x0 are degraded to the start step, then the degraded input, the
direct reconstruction R(x_T, T) and the sampled result are each compared with x0 by

* PSNR = 10 log10(range² / MSE) (per image, averaged; images in [-1, 1], so range = 2);
* SSIM (Wang et al. 2004, eq. 13): Gaussian window (σ = 1.5, 11 taps or fewer on small
  images), K1 = 0.01, K2 = 0.03, mean of the valid-region SSIM map;
* RMSE in [-1, 1] units.

They apply to every degradation that is not Gaussian noise (:func:`restoration_applies`):
a cold degradation's start step keeps information about x0 worth restoring, pure noise does
not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from corediff.interfaces import Degradation
from corediff.pipeline import Pipeline

DATA_RANGE = 2.0
#: Floor of the MSE in PSNR, so identical images score a finite 106 dB.
MIN_MSE = 1e-10


def psnr(x: Tensor, reference: Tensor, data_range: float = DATA_RANGE) -> Tensor:
    """PSNR in dB of each image of x [B, ...] against reference (MSE floored at MIN_MSE)."""
    mse = (x.double() - reference.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(MIN_MSE))


def rmse(x: Tensor, reference: Tensor) -> Tensor:
    """Root mean squared error of each image [B]."""
    return (x.double() - reference.double()).square().flatten(1).mean(1).sqrt()


def _gaussian_window(size: int, sigma: float) -> Tensor:
    taps = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-taps.square() / (2 * sigma**2))
    return window / window.sum()


def ssim(
    x: Tensor, reference: Tensor, data_range: float = DATA_RANGE, *, window_size: int = 11,
    sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
) -> Tensor:
    """Mean SSIM of each image of x [B, C, H, W] against reference, over channels and the
    valid positions of the window (shrunk to the largest odd size that fits)."""
    size = min(window_size, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2
    g = _gaussian_window(size, sigma)
    channels = x.shape[1]

    def blur(image: Tensor) -> Tensor:  # separable Gaussian filter, per channel, valid region
        rows = F.conv2d(image, g.view(1, 1, 1, -1).expand(channels, 1, 1, size), groups=channels)
        return F.conv2d(rows, g.view(1, 1, -1, 1).expand(channels, 1, size, 1), groups=channels)

    a, b = x.double(), reference.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    )
    return ssim_map.flatten(1).mean(1)


def image_metrics(x: Tensor, reference: Tensor) -> dict[str, float]:
    """Batch means of PSNR (dB), SSIM and RMSE."""
    return {
        "psnr": float(psnr(x, reference).mean()),
        "ssim": float(ssim(x, reference).mean()),
        "rmse": float(rmse(x, reference).mean()),
    }


def restoration_applies(degradation: Degradation) -> bool:
    """Whether restoration metrics are computed for ``degradation``: it does not provide
    the "gaussian" capability."""
    return "gaussian" not in degradation.provides


@torch.no_grad()
def restoration_metrics(
    pipeline: Pipeline, model: nn.Module, x0: Tensor, *, labels: Tensor | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Degrade real images x0 [B, C, H, W] to the prior's start step, restore them with the
    pipeline's sampler, and score the degraded input, direct reconstruction and sample
    (the last two clamped to the data range, as images would be saved); with ``labels`` the
    network is conditioned (and guided) on them."""
    start = pipeline.prior.start_step()
    degraded, direct, sample = pipeline.restore(x0, start, labels=labels, seed=seed, model=model)
    return {
        "start_step": start,
        "degraded": image_metrics(degraded, x0),
        "direct": image_metrics(direct.clamp(-1, 1), x0),
        "sampled": image_metrics(sample.clamp(-1, 1), x0),
    }
