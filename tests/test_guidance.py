"""Guidance plugins against their closed forms: cfg (Ho & Salimans 2022, eq. 6) bit-exact with
v0.1's formula, cfg_rescale against Lin et al. 2023, eq. 15-16, cfg_interval's
interval, and the Denoiser's batching (one network call on [x, x] with labels [y, ∅])."""

from __future__ import annotations

import pytest
import torch

import corediff
from corediff.denoiser import Denoiser


@pytest.fixture
def parts():
    schedule = corediff.create("schedule", "cosine", steps=100)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    parameterization = corediff.create("parameterization", "v", degradation=degradation)
    return degradation, parameterization


def _guidance(parts, name, **config):
    degradation, parameterization = parts
    return corediff.create("guidance", name, degradation=degradation,
                           parameterization=parameterization, **config)


def _network(calls):
    def network(x, t, y):
        calls.append(x.shape[0])
        return torch.tanh(x) * (1 + y.view(-1, 1, 1, 1).float()) + t.view(-1, 1, 1, 1) / 100
    return network


def test_cfg_is_v01_formula_bit_exact(parts):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 1, 4, 4, generator=g), torch.tensor([0, 4, 9])
    calls: list[int] = []
    network = _network(calls)
    guidance = _guidance(parts, "cfg", scale=2.5)
    prediction = Denoiser(network, parts[1], guidance=guidance, labels=y, null_label=10)(x, 40)
    t = torch.full((3,), 40)
    out_cond, out_null = network(x.repeat(2, 1, 1, 1), t.repeat(2),
                                 torch.cat([y, torch.full_like(y, 10)])).chunk(2)
    expected = parts[1].predict(out_null + 2.5 * (out_cond - out_null), x, t)
    assert torch.equal(prediction.x0, expected.x0)
    assert calls[0] == 6  # one call on the doubled batch


def test_scale_one_and_none_call_the_conditional_network_once(parts):
    x, y = torch.randn(2, 1, 4, 4), torch.tensor([1, 2])
    for guidance in (_guidance(parts, "cfg", scale=1.0), _guidance(parts, "none")):
        calls: list[int] = []
        denoiser = Denoiser(_network(calls), parts[1], guidance=guidance, labels=y, null_label=10)
        denoiser(x, 10)
        assert calls == [2] and denoiser.evaluations == 1


def test_cfg_rescale_matches_lin_et_al_eq_15_16(parts):
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([30, 70])
    guidance = _guidance(parts, "cfg_rescale", scale=5.0, phi=0.7)
    guided = uncond + 5.0 * (cond - uncond)
    std = lambda a: a.std(dim=(1, 2, 3), keepdim=True)  # noqa: E731 - per-sample std
    expected = 0.7 * guided * std(cond) / std(guided) + 0.3 * guided
    ours = guidance.combine(cond, uncond, x, t)
    torch.testing.assert_close(ours.x0, parts[1].predict(expected, x, t).x0)
    plain = _guidance(parts, "cfg_rescale", scale=5.0, phi=0.0).combine(cond, uncond, x, t)
    torch.testing.assert_close(plain.x0, parts[1].predict(guided, x, t).x0)


def test_cfg_interval_guides_only_inside(parts):
    guidance = _guidance(parts, "cfg_interval", scale=3.0, low=0.2, high=0.6)
    assert [guidance.active(t) for t in (1, 20, 21, 60, 61, 100)] == [
        False, False, True, True, False, False]
    assert not _guidance(parts, "cfg_interval", scale=1.0, low=0.2, high=0.6).active(40)
    with pytest.raises(Exception, match="low = 0.6 must be below high = 0.2"):
        _guidance(parts, "cfg_interval", low=0.6, high=0.2)
