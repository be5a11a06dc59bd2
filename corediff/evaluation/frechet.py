"""Distances between two sets of feature vectors: Fréchet distance and kernel inception distance.

Fréchet distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", eq. 6;
Dowson & Landau 1982) between Gaussians fitted to the features:

    d² = ||μ1 − μ2||² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1 Σ2)^{1/2})

computed in float64 without a general matrix square root: with S = Σ1^{1/2} (symmetric, from
an eigendecomposition), Σ1 Σ2 is similar to the symmetric PSD matrix S Σ2 S, so
tr((Σ1 Σ2)^{1/2}) = Σ_i sqrt(λ_i(S Σ2 S)).

KID (Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 4): the unbiased MMD² with the cubic
polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    x = features.double().flatten(1)
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition (negative eigenvalues of
    round-off are clamped to 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """d² between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, sigma1, mu2, sigma2 = (v.double() for v in (mu1, sigma1, mu2, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(d2.clamp_min(0))


def frechet_distance_of(features1: Tensor, features2: Tensor) -> float:
    """Fréchet distance between two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


def kernel_distance(
    features1: Tensor, features2: Tensor, *, subsets: int = 100, subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subsets of the unbiased MMD² (cubic kernel).

    ``subset_size`` is capped at the smaller set's size.
    """
    x, y = features1.double().flatten(1), features2.double().flatten(1)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {m}")
    d = x.shape[1]
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(subsets):
        a = x[torch.randperm(x.shape[0], generator=generator)[:m]]
        b = y[torch.randperm(y.shape[0], generator=generator)[:m]]
        k_aa, k_bb = (a @ a.T / d + 1).pow(3), (b @ b.T / d + 1).pow(3)
        k_ab = (a @ b.T / d + 1).pow(3)
        off_diagonal = (k_aa.sum() - k_aa.trace() + k_bb.sum() - k_bb.trace()) / (m * (m - 1))
        estimates.append(off_diagonal - 2 * k_ab.mean())
    values = torch.stack(estimates)
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0
