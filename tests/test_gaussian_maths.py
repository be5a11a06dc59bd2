"""corediff.maths.gaussian, the public Gaussian maths, against the closed forms on fresh random
inputs: ε/x0/v conversions invert each other, tables agree with ᾱ, the posterior of a perfect
x̂0 matches DDPM eq. 7."""

from __future__ import annotations

import torch

from corediff.maths import gaussian


def _draw(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    alpha_bar = torch.rand(5, 1, 1, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x0, eps = (torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    return alpha_bar, x0, eps


def test_conversions_invert_each_other():
    for seed in range(3):
        alpha_bar, x0, eps = _draw(seed)
        alpha, sigma = gaussian.alpha_sigma(alpha_bar)
        torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))
        x_t = alpha * x0 + sigma * eps
        torch.testing.assert_close(gaussian.x0_from_eps(x_t, eps, alpha, sigma), x0)
        torch.testing.assert_close(gaussian.eps_from_x0(x_t, x0, alpha, sigma), eps)
        v = gaussian.v_from(x0, eps, alpha, sigma)
        torch.testing.assert_close(v, alpha * eps - sigma * x0)
        torch.testing.assert_close(gaussian.x0_from_v(x_t, v, alpha, sigma), x0)
        torch.testing.assert_close(gaussian.eps_from_v(x_t, v, alpha, sigma), eps)
        torch.testing.assert_close(gaussian.snr(alpha_bar), alpha**2 / sigma**2)


def test_tables_follow_alpha_bar():
    betas = gaussian.linear_betas(1e-4, 0.02, 50, sqrt_space=False)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
    tables = gaussian.GaussianTables(alpha_bar)
    t = torch.tensor([1, 7, 50])
    like = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(tables.alpha(t, like).flatten(), alpha_bar[t].sqrt())
    torch.testing.assert_close(tables.sigma(t, like).flatten(), (1 - alpha_bar[t]).sqrt())
    torch.testing.assert_close(tables.at("snr", t), alpha_bar[t] / (1 - alpha_bar[t]))


def test_posterior_mean_of_the_true_x0_is_ddpm_eq_7():
    betas = gaussian.linear_betas(1e-4, 0.02, 20, sqrt_space=False)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
    tables = gaussian.GaussianTables(alpha_bar)
    _, x0, eps = _draw(4)
    t = torch.tensor([1, 5, 10, 15, 20])
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    beta = betas[t - 1].view(-1, 1, 1, 1)
    ab_prev = alpha_bar[t - 1].view(-1, 1, 1, 1)
    expected = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev)
                                                          / (1 - ab)) * x_t
    torch.testing.assert_close(tables.posterior_mean(x0, x_t, t), expected)
