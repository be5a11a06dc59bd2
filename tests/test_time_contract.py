"""The time contract across kinds: discrete-step components refuse continuous-only
degradations in one sentence, and the kind-agnostic ones follow the degradation's time."""

from __future__ import annotations

from pathlib import Path

import pytest

import corediff
from corediff.maths.timesteps import time_at

FLOW = Path(__file__).resolve().parents[1] / "recipes" / "flow_digits.toml"
EDM = Path(__file__).resolve().parents[1] / "recipes" / "edm_digits.toml"


def test_time_at_follows_the_kind_of_time() -> None:
    assert time_at(0.7, 1000) == 700 and isinstance(time_at(0.7, 1000), int)
    assert time_at(0.0001, 10) == 1
    assert time_at(0.7, 1.0) == pytest.approx(0.7) and time_at(0.5, 80.0) == 40.0


@pytest.mark.parametrize("sampler", ["cold_naive", "cold_improved", "cold_fixed_noise"])
def test_cold_samplers_refuse_continuous_times(sampler: str) -> None:
    with pytest.raises(corediff.CorediffError,
                       match=f"'{sampler}' walks the integer steps of a discrete degradation, "
                             "but 'flow' takes continuous times only"):
        corediff.load_recipe(FLOW, overrides=[f"diffusion.sampler={{type='{sampler}'}}"])


def test_generic_components_follow_continuous_time() -> None:
    flow = corediff.build(corediff.load_recipe(FLOW, overrides=[
        "diffusion.prior={type='random_start', fraction=0.7}",
        "diffusion.sampler={type='one_step'}"]))
    assert flow.prior.start_step() == pytest.approx(0.7)
    assert flow.sampler.timesteps() == [1.0]
    edm = corediff.build(corediff.load_recipe(EDM))
    assert edm.prior.start_step() == 80.0 and edm.degradation.prior_std() == 80.0
    images = edm.sample(2, steps=3)
    assert images.shape == (2, 1, 16, 16) and images.isfinite().all()
