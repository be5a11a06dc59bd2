"""P2 weighting against its closed form (Choi et al. 2022, eq. 8)."""

from __future__ import annotations

import pytest
import torch

import corediff

T = 1000


def build(parameterization_name: str, weighting: str = "p2", schedule_fields=None, **fields):
    schedule = corediff.create("schedule", "linear", steps=T, **(schedule_fields or {}))
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    parameterization = corediff.create("parameterization", parameterization_name,
                                       degradation=degradation)
    loss_weighting = corediff.create("loss_weighting", weighting, degradation=degradation,
                                     parameterization=parameterization, **fields)
    return schedule.values(), loss_weighting


def random_steps(seed: int) -> torch.Tensor:
    return torch.randint(1, T + 1, (256,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("gamma", "k"), [(1.0, 1.0), (0.5, 1.0), (2.0, 0.1), (1.0, 5.0)])
@pytest.mark.parametrize("parameterization_name", ["eps", "v", "x0"])
def test_closed_form(parameterization_name, gamma, k):
    alpha_bar, weighting = build(parameterization_name, gamma=gamma, k=k)
    t = random_steps(int(10 * gamma + k))
    snr = alpha_bar[t] / (1 - alpha_bar[t])
    eps_weight = (k + snr) ** -gamma  # λ'_t of eq. 8 with λ_t = 1, on ||ε − ε̂||²
    expected = {"eps": eps_weight, "v": eps_weight * snr / (snr + 1),
                "x0": eps_weight * snr}[parameterization_name]
    weight = weighting.weight(t)
    assert weight.dtype == torch.float32 and weight.shape == t.shape
    torch.testing.assert_close(weight, expected.float(), rtol=1e-6, atol=0)


def test_gamma_zero_is_simple_for_eps():
    _, p2 = build("eps", gamma=0.0)
    _, simple = build("eps", "simple")
    t = torch.cat([random_steps(3), torch.tensor([1, T])])
    assert torch.equal(p2.weight(t), simple.weight(t))


def test_limits_at_extreme_snr():
    """SNR = 0 (zero terminal SNR, t = T) and SNR = ∞ (t = 0) take their limits
    (ε-prediction at zero terminal SNR is a composition corediff refuses, as a recipe does)."""
    _, eps = build("eps", gamma=1.0, k=2.0)
    assert eps.weight(torch.tensor([0])).item() == 0.0  # 1/(k + ∞)
    with pytest.raises(corediff.ConfigError, match="zero terminal SNR"):
        build("eps", schedule_fields={"rescale_zero_terminal_snr": True}, gamma=1.0, k=2.0)
    t = torch.tensor([0, T])
    _, v = build("v", schedule_fields={"rescale_zero_terminal_snr": True}, gamma=1.0, k=2.0)
    torch.testing.assert_close(v.weight(t), torch.tensor([0.0, 0.0]))
    for gamma, limit in [(0.5, float("inf")), (1.0, 1.0), (2.0, 0.0)]:
        _, x0 = build("x0", gamma=gamma)
        assert x0.weight(torch.tensor([0])).item() == limit


def test_loss_type():
    _, l1 = build("eps", loss_type="l1")
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(l1.per_element(a, b), (a - b).abs())
    _, l2 = build("eps")
    torch.testing.assert_close(l2.per_element(a, b), (a - b).square())
