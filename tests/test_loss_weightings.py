"""Loss weightings in closed form: min-SNR's per-parameterization mapping (Hang et al. 2023),
the SNR weighting and the DDPM ELBO coefficient β²/(2σ²α(1-ᾱ)) (Ho et al. 2020, eq. 12)."""

from __future__ import annotations

import pytest
import torch

from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.loss_weightings.min_snr import MinSNRWeighting
from corediff_plugins.loss_weightings.simple import SimpleWeighting
from corediff_plugins.loss_weightings.snr import SNRWeighting
from corediff_plugins.loss_weightings.vlb import VLBWeighting
from corediff_plugins.parameterizations.eps import EpsParameterization
from corediff_plugins.parameterizations.mu import MuParameterization
from corediff_plugins.parameterizations.v import VParameterization
from corediff_plugins.parameterizations.x0 import X0Parameterization
from corediff_plugins.schedules.linear import LinearSchedule

DEGRADATION = GaussianDegradation(schedule=LinearSchedule())
A = DEGRADATION.schedule.values()
PARAMS = {"eps": EpsParameterization, "x0": X0Parameterization, "mu": MuParameterization,
          "v": VParameterization}
T_STEPS = torch.randint(1, 1001, (64,), generator=torch.Generator().manual_seed(0))


def _closed_form(t: torch.Tensor) -> dict[str, torch.Tensor]:
    a, a_prev = A[t], A[t - 1]
    beta = 1 - a / a_prev
    return {"snr": a / (1 - a), "coef_x0": a_prev.sqrt() * beta / (1 - a), "beta": beta,
            "alpha": 1 - beta, "alpha_bar": a}


def _weighting(cls, name, config=None, degradation=DEGRADATION):
    param = PARAMS[name](degradation=degradation)
    return cls(config, degradation=degradation, parameterization=param)


@pytest.mark.parametrize("name", list(PARAMS))
def test_min_snr_mapping(name):
    gamma = 5.0
    w = _weighting(MinSNRWeighting, name).weight(T_STEPS)
    assert w.dtype == torch.float32 and w.shape == (64,)
    c = _closed_form(T_STEPS)
    clipped = c["snr"].clamp(max=gamma)
    expected = {"eps": clipped / c["snr"], "x0": clipped, "v": clipped / (c["snr"] + 1),
                "mu": clipped / c["coef_x0"] ** 2}[name]
    torch.testing.assert_close(w, expected.float())


@pytest.mark.parametrize("name", list(PARAMS))
def test_snr_and_simple(name):
    c = _closed_form(T_STEPS)
    expected = {"eps": torch.ones(64), "x0": c["snr"], "v": c["snr"] / (c["snr"] + 1),
                "mu": c["snr"] / c["coef_x0"] ** 2}[name]
    torch.testing.assert_close(_weighting(SNRWeighting, name).weight(T_STEPS), expected.float())
    assert torch.equal(_weighting(SimpleWeighting, name).weight(T_STEPS), torch.ones(64))


@pytest.mark.parametrize("name", list(PARAMS))
def test_vlb_weight(name):
    t = torch.cat([torch.tensor([1, 2]), T_STEPS])
    c = _closed_form(t)
    a_prev = A[t - 1]
    sigma2 = (1 - a_prev) / (1 - c["alpha_bar"]) * c["beta"]
    sigma2[0] = sigma2[1]  # β̃_1 = 0: clipped to β̃_2
    eps_weight = c["beta"] ** 2 / (2 * sigma2 * c["alpha"] * (1 - c["alpha_bar"]))
    snr_over_scale = {"eps": 1, "x0": c["snr"], "v": c["snr"] / (c["snr"] + 1),
             "mu": c["snr"] / c["coef_x0"] ** 2}[name]
    weight = _weighting(VLBWeighting, name).weight(t)
    torch.testing.assert_close(weight, (eps_weight * snr_over_scale).float())
    assert torch.isfinite(weight).all()


def test_zero_terminal_snr_is_finite_and_l1():
    schedule = LinearSchedule(LinearSchedule.Config(rescale_zero_terminal_snr=True))
    degradation = GaussianDegradation(schedule=schedule)
    t = torch.tensor([1, 500, 1000])
    for name in PARAMS:
        w = _weighting(MinSNRWeighting, name, degradation=degradation).weight(t)
        assert torch.isfinite(w).all()
        assert w[-1] == (1.0 if name == "eps" else 0.0)  # snr = 0: limit of min(snr, γ)/snr
    l1 = _weighting(MinSNRWeighting, "eps", MinSNRWeighting.Config(loss_type="l1"))
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    assert torch.equal(l1.per_element(a, b), torch.tensor([0.5, 3.0]))
    l2 = _weighting(SimpleWeighting, "v")
    assert torch.equal(l2.per_element(a, b), torch.tensor([0.25, 9.0]))
