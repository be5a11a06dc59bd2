"""corediff.testing catches broken plugins (a third party relies on it failing): a sampler
that misreports nfe, one that does not return the data under the true-x0 oracle, a guidance
that changes equal predictions."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from corediff import testing
from corediff.config import ComponentConfig
from corediff.interfaces import Guidance
from corediff.registry import register, registry
from corediff_plugins.samplers.ddim import DDIMSampler, DDIMSamplerConfig


@pytest.fixture
def registered():
    names = []

    def add(kind, cls):
        register(kind)(cls)
        names.append((kind, cls.Config.model_fields["type"].default))
        return cls

    yield add
    for kind, name in names:
        registry(kind).unregister(name)


def test_the_real_ddim_passes():
    assert testing.check_plugin("sampler", "ddim", devices=["cpu"]) >= 1


def test_a_sampler_misreporting_nfe_fails(registered):
    class BadNfeConfig(DDIMSamplerConfig):
        type: Literal["ddim_bad_nfe"] = "ddim_bad_nfe"  # type: ignore[assignment]

    class BadNfe(DDIMSampler):
        Config = BadNfeConfig
        evaluations_per_step = 2  # claims Heun-like cost but calls the network once

    registered("sampler", BadNfe)
    with pytest.raises(AssertionError, match="nfe: result"):
        testing.check_plugin("sampler", "ddim_bad_nfe", devices=["cpu"])


def test_a_deterministic_sampler_that_loses_the_data_fails(registered):
    class ShrinkConfig(DDIMSamplerConfig):
        type: Literal["ddim_shrink"] = "ddim_shrink"  # type: ignore[assignment]

    class Shrink(DDIMSampler):
        Config = ShrinkConfig

        def step(self, x, step, denoise):
            x_next, x0 = super().step(x, step, denoise)
            return (0.9 * x_next if step.is_last else x_next), x0

    registered("sampler", Shrink)
    with pytest.raises(AssertionError, match="true-x0 oracle"):
        testing.check_plugin("sampler", "ddim_shrink", devices=["cpu"])


def test_a_guidance_that_changes_equal_outputs_fails(registered):
    class DoublingConfig(ComponentConfig):
        type: Literal["doubling"] = "doubling"

    class Doubling(Guidance):
        Config = DoublingConfig

        def active(self, t):
            return True

        def combine(self, cond, uncond, x_t, t):
            return self.parameterization.predict(2 * cond, x_t, t)

    registered("guidance", Doubling)
    with pytest.raises(AssertionError, match="guidance of equal outputs"):
        testing.check_plugin("guidance", "doubling", devices=["cpu"])


def test_oracle_output_predicts_x0():
    classes = testing.chains("sampler", "ddim")[0]
    built = testing.build_chain(classes)
    x0 = testing.images(dtype=torch.float64)
    t = torch.full((testing.IMAGES,), 10)
    x_t = built["degradation"].degrade(x0, t)
    out = testing.oracle(built, x0)(x_t, t)
    torch.testing.assert_close(built["parameterization"].predict(out, x_t, t).x0, x0)


@pytest.fixture
def broken_prior(monkeypatch):
    """A prior whose entry point cannot be imported (as a broken installed package's)."""
    from importlib import metadata

    from corediff.registry import PluginInfo

    target = "no_such_module_for_conformance:Prior"
    info = PluginInfo("prior", "broken_prior", target, "corediff-broken", "0",
                      metadata.EntryPoint("broken_prior", target, "corediff.priors"))
    monkeypatch.setitem(registry("prior")._in_process, "broken_prior", info)
    return "broken_prior"


def test_a_broken_plugin_is_reported_and_the_others_still_run(broken_prior):
    cases = testing.conformance_cases(kinds=["prior"], devices=["cpu"], configs=False)
    broken = [case for case in cases if case.name == broken_prior]
    assert len(broken) == 1 and len(cases) > 1
    with pytest.raises(AssertionError, match="prior 'broken_prior' cannot be loaded: PluginError"):
        broken[0].run()
    assert testing.chains("sampler", "ddim"), "companions leave the broken prior out"
    assert testing.check_plugin("prior", "normal", devices=["cpu"]) >= 1
    assert [case.name for case in testing.conformance_cases(names={"ddim"})] != []


def test_variants_come_from_the_schema():
    configs = testing.variants(DDIMSampler)
    changed = {name for config in configs for name, value in config.model_dump().items()
               if value != testing.make_config(DDIMSampler).model_dump()[name]}
    assert {"eta", "steps", "clip_x0"} <= changed, changed
