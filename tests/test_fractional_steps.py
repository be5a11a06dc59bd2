"""Continuous time on a discrete Gaussian schedule: fractional steps evaluate ᾱ by log-σ
interpolation (k-diffusion's DiscreteSchedule), integer-valued float steps give the tables,
and the Gaussian pieces (degradation, eps/v parameterizations) accept float times."""

from __future__ import annotations

import pytest
import torch

import corediff
from corediff.maths.gaussian import GaussianTables, karras_sigmas, sigma_at_step, step_from_sigma

MARGINAL = ("alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus", "inv_sqrt_one_minus", "snr")


@pytest.fixture(params=["cosine", "linear"])
def alpha_bar(request: pytest.FixtureRequest) -> torch.Tensor:
    return corediff.create("schedule", request.param, steps=200).values()


def test_integer_valued_float_steps_give_the_tables(alpha_bar: torch.Tensor) -> None:
    tables = GaussianTables(alpha_bar)
    steps = torch.arange(0, 201)
    for name in MARGINAL:
        torch.testing.assert_close(tables.at(name, steps.double()), tables.at(name, steps),
                                   rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="integer steps"):
        tables.at("coef_x0", steps.double())


def test_log_sigma_is_linear_between_steps(alpha_bar: torch.Tensor) -> None:
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    t = torch.tensor([1.25, 17.5, 120.75, 199.9], dtype=torch.float64)
    low, w = t.floor().long(), t - t.floor()
    expected = ((1 - w) * sigma[low].log() + w * sigma[low + 1].log()).exp()
    torch.testing.assert_close(sigma_at_step(t, alpha_bar), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(step_from_sigma(expected, alpha_bar), t, rtol=1e-10, atol=0)
    table = GaussianTables(alpha_bar)
    torch.testing.assert_close(table.at("alpha_bar", t), 1 / (1 + expected.square()))


def test_karras_grid_is_eq5() -> None:
    sigmas = karras_sigmas(5, 0.002, 80.0, 7.0)
    i = torch.arange(5, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(sigmas, expected, rtol=1e-14, atol=0)
    assert sigmas[0] == pytest.approx(80) and sigmas[-1] == pytest.approx(0.002)


@pytest.mark.parametrize("param", ["eps", "v", "x0"])
def test_gaussian_pieces_take_fractional_steps(param: str) -> None:
    schedule = corediff.create("schedule", "cosine", steps=100)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    parameterization = corediff.create("parameterization", param, degradation=degradation)
    x0 = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3.5, 42.25, 99.75], dtype=torch.float64)
    x_t = degradation.degrade(x0, t, noise)
    output = parameterization.target(x0, x_t, t, noise)  # the perfect network output
    torch.testing.assert_close(parameterization.predict(output, x_t, t).x0, x0,
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(degradation.estimate_noise(x_t, x0, t), noise, atol=1e-4, rtol=0)
