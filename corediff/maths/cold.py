"""Cold Diffusion maths, public and documented (Bansal et al. 2022, "Cold Diffusion").

* :func:`composed_sigma`: the width of t Gaussian blurs applied in turn (variances add).
* :func:`svd_error_curve`: mean |x − D_k(x)| of rank-k truncation for every k — the notes'
  tool for choosing a rank schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor


def composed_sigma(kernel_std: Tensor) -> Tensor:
    """Effective widths [T + 1] of blurs with stds ``kernel_std`` [T] applied in turn.

    The convolution of Gaussians is a Gaussian whose variance is the sum:
    σ(t) = sqrt(Σ_{i ≤ t} σ_i²), with σ(0) = 0.
    """
    variance = torch.cat([kernel_std.new_zeros(1), kernel_std.square().cumsum(0)])
    return variance.sqrt()


def svd_error_curve(images: Tensor) -> Tensor:
    """Mean |x − D_k(x)| over ``images`` [N, C, H, W] for k = 0 .. min(H, W), float64.

    D_k keeps the k largest singular values of every channel; rank-1 terms are added one
    at a time (a loop over ranks, never over images).
    """
    x = images.double()
    U, S, Vh = torch.linalg.svd(x, full_matrices=False)
    recon = torch.zeros_like(x)
    errors = [x.abs().mean()]
    for k in range(S.shape[-1]):
        recon = recon + S[..., k, None, None] * U[..., :, k, None] * Vh[..., k, None, :]
        errors.append((x - recon).abs().mean())
    return torch.stack(errors)
