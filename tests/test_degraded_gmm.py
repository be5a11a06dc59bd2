"""The degraded_gmm prior (a GMM on the PCA coefficients of D(x0, s), Cold Diffusion §5.1's
channel-mean GMM generalised) on scikit-learn's digits at 16×16 with the SVD degradation of
studies/recipes/svd_digits16.toml (rank_energy schedule, T = 10, min_rank 0): k(s) per step is
[16, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0], so fraction 0.2 starts at s = 2 (rank 2), the default 0.7
at s = 7 (rank 1)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from corediff.evaluation.memorization import nearest_distances
from corediff.interfaces import steps_like
from corediff_plugins.datasets.digits import DigitsConfig, DigitsDataset
from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.degradations.svd import SVDDegradation
from corediff_plugins.priors.degraded_gmm import DegradedGMMConfig, DegradedGMMPrior
from corediff_plugins.schedules.linear import LinearSchedule, LinearScheduleConfig
from corediff_plugins.schedules.rank_energy import RankEnergyConfig, RankEnergySchedule

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return DigitsDataset(DigitsConfig(image_size=16, class_labels=False)).images  # 1500 train


@pytest.fixture(scope="module")
def svd(digits) -> SVDDegradation:
    schedule = RankEnergySchedule(RankEnergyConfig(steps=10))
    schedule.fit(digits)  # as Trainer.fit_components does, before the prior
    return SVDDegradation(schedule=schedule)


def fitted(svd, digits, **fields) -> DegradedGMMPrior:
    prior = DegradedGMMPrior(DegradedGMMConfig(**fields), degradation=svd)
    prior.fit(digits)
    return prior


@pytest.mark.parametrize("fraction", [0.2, 0.7])
def test_samples_have_the_rank_of_the_start_step(svd, digits, fraction):
    prior = fitted(svd, digits, fraction=fraction)
    s = prior.start_step()
    assert s == max(1, round(fraction * 10))
    k = int(svd.ranks(16)[s])
    assert 0 < k < 8  # a real truncation of these rank-8 (upsampled 8×8) digits
    generator = torch.Generator().manual_seed(0)
    x = prior.sample((256, *SHAPE), generator=generator)
    sigma = torch.linalg.svdvals(x.double())[:, 0]  # [256, 16] per (only) channel
    top = sigma[:, :1]
    # beyond k(s): float32 round-off of U diag(σ·mask) Vᵀ (measured ≤ 2.6e-8 · σ₁)
    assert (sigma[:, k:] <= 1e-5 * top).all()
    assert (sigma[:, k - 1] >= 1e-2 * top[:, 0]).all()  # rank exactly k(s), not lower
    raw = DegradedGMMPrior(prior.config.model_copy(update={"project": False}), degradation=svd)
    raw.load_extra_state(prior.extra_state())
    unprojected = torch.linalg.svdvals(raw.sample((256, *SHAPE), generator=generator).double())
    assert (unprojected[:, 0, k] > 1e-3 * unprojected[:, 0, 0]).float().mean() > 0.9, \
        "without the projection the mixture's samples are not of rank k(s): the check bites"


def test_single_gaussian_matches_its_closed_form(svd, digits):
    """components = 1: EM's answer is the maximum-likelihood Gaussian of the coefficients,
    m = 0 (centred data) and S = diag(σ_i² / N) + reg_covar·I (σ_i the singular values of the
    centred D(x0, s); PCA coefficients are uncorrelated). Samples (project = false, so
    x = μ + Bᵀc exactly and c = B(x − μ)) are whitened by S: w = L⁻¹(c − m) ~ N(0, I_d).
    Over n draws each mean of w has std 1/√n and each covariance entry std ≤ √(2/n); the
    bounds 5/√n and 6·√(2/n) (d = 32: 32 means, 528 entries) fail by chance with probability
    below 1e-4."""
    prior = fitted(svd, digits, fraction=0.2, components=1, project=False)
    state = prior.extra_state()
    mean, basis = state["pca_mean"].flatten(), state["basis"]
    y = svd.degrade(digits, steps_like(prior.start_step(), digits)).flatten(1).double()
    sigma = torch.linalg.svdvals(y - y.mean(0))[: basis.shape[0]]
    closed = torch.diag(sigma**2 / len(digits) + 1e-6)  # scikit-learn's reg_covar = 1e-6
    scale_tril = state["scale_tril"][0]
    torch.testing.assert_close(state["weights"], torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(state["means"][0], torch.zeros_like(sigma), atol=1e-9, rtol=0)
    torch.testing.assert_close(scale_tril @ scale_tril.T, closed, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(basis @ basis.T, torch.eye(basis.shape[0], dtype=torch.float64))

    n = 20000
    x = prior.sample((n, *SHAPE), generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32
    c = (x.flatten(1).double() - mean) @ basis.T
    w = torch.linalg.solve_triangular(scale_tril, (c - state["means"][0]).T, upper=False).T
    assert w.mean(0).abs().max() < 5 / math.sqrt(n)
    eye = torch.eye(w.shape[1], dtype=torch.float64)
    assert (torch.cov(w.T) - eye).abs().max() < 6 * math.sqrt(2 / n)


def test_extra_state_round_trip_gives_identical_samples(svd, digits):
    prior = fitted(svd, digits)
    buffer = io.BytesIO()
    torch.save(prior.extra_state(), buffer)  # as a checkpoint stores it
    buffer.seek(0)
    restored = DegradedGMMPrior(prior.config, degradation=svd)
    with pytest.raises(RuntimeError, match="not fitted"):
        restored.sample((2, *SHAPE))
    restored.load_extra_state(torch.load(buffer))
    first = prior.sample((64, *SHAPE), generator=torch.Generator().manual_seed(2))
    again = restored.sample((64, *SHAPE), generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    other = restored.sample((64, *SHAPE), generator=torch.Generator().manual_seed(3))
    assert not torch.equal(first, other)
    with pytest.raises(ValueError, match="fitted on"):
        restored.sample((2, 3, 16, 16))


def test_samples_are_not_copies_of_training_images(svd, digits):
    """Nearest-training-image RMSE against the DEGRADED training set D(x0, s) (where the
    prior's samples live; against clean x0 every rank-1 sample is trivially far). Measured:
    98.6 % of samples above 0.05, held-out test digits' D(x0, s) 95.6 %; a mixture with one
    component per training image (a memoriser) 0 %."""
    prior = fitted(svd, digits)  # defaults: fraction 0.7 (s = 7, rank 1), 10 components
    x = prior.sample((500, *SHAPE), generator=torch.Generator().manual_seed(3))
    train = svd.degrade(digits, steps_like(prior.start_step(), digits))
    rmse, _ = nearest_distances(x, train)
    assert (rmse > 0.05).double().mean() > 0.9


def test_project_is_refused_for_a_stochastic_degradation(digits):
    gaussian = GaussianDegradation(schedule=LinearSchedule(LinearScheduleConfig(steps=100)))
    with pytest.raises(ValueError, match="project = false"):
        DegradedGMMPrior(degradation=gaussian)
    prior = DegradedGMMPrior(DegradedGMMConfig(project=False, dims=8), degradation=gaussian)
    prior.fit(digits[:200])
    x = prior.sample((4, *SHAPE), generator=torch.Generator().manual_seed(4))
    assert x.shape == (4, *SHAPE) and torch.isfinite(x).all()
