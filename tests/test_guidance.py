"""Guidance plugins against their closed forms: cfg (Ho & Salimans 2022, eq. 6) bit-exact with
v0.1's formula, cfg_rescale against Lin et al. 2023, eq. 15-16, cfg_interval's
interval, the Denoiser's batching (one network call on [x, x] with labels [y, ∅]) and the
guidance's per-run state."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

import corediff
from corediff.config import ComponentConfig
from corediff.denoiser import Denoiser
from corediff.interfaces import Guidance


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


class MomentumGuidance(Guidance):
    """CFG on a momentum of the guidance direction, as APG keeps one (Sadat et al. 2024,
    "Eliminating Oversaturation and Artifacts of High Guidance Scales", Algorithm 1):
    Δ ← (m(y) − m(∅)) + β·Δ with β = −0.5, guided = m(∅) + s·Δ, Δ = 0 when a run starts."""

    class Config(ComponentConfig):
        type: Literal["momentum_test"] = "momentum_test"

    def active(self, t):
        return True

    def start(self):
        super().start()
        self.state["delta"] = 0.0
        self.state["combined"] = 0

    def combine(self, cond, uncond, x_t, t):
        self.state["delta"] = (cond - uncond) - 0.5 * self.state["delta"]
        self.state["combined"] += 1
        return self.parameterization.predict(uncond + 3.0 * self.state["delta"], x_t, t)


def test_guidance_state_lives_for_one_sampling_run(parts):
    degradation, parameterization = parts
    sampler = corediff.create("sampler", "ddim", degradation=degradation,
                              parameterization=parameterization, steps=5)
    guidance = MomentumGuidance(degradation=degradation, parameterization=parameterization)
    x, y = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2)), torch.arange(3)

    def run(guide, denoiser=None):
        denoiser = denoiser or Denoiser(_network([]), parameterization, guidance=guide,
                                        labels=y, null_label=10)
        return sampler.sample(denoiser, x, generator=torch.Generator().manual_seed(0)).sample

    once = Denoiser(_network([]), parameterization, guidance=guidance, labels=y, null_label=10)
    first, second = run(guidance, once), run(guidance, once)  # one Denoiser, two runs
    assert guidance.state["combined"] == 5  # this run's steps only, not 10
    assert torch.equal(first, second)  # the second run did not start from the first's Δ
    assert torch.equal(first, run(MomentumGuidance(degradation=degradation,
                                                   parameterization=parameterization)))
    assert not torch.equal(first, run(_guidance(parts, "cfg", scale=3.0)))  # Δ matters
