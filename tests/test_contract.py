"""The public plugin contract: kinds written once, capabilities validated when a plugin loads
(messages pinned), config-dependent capabilities, the model's data-spec hook at validation."""

from __future__ import annotations

import re

import pytest

import corediff
from corediff.errors import ConfigError, PluginError
from corediff.kinds import BY_NAME, KINDS
from corediff.recipe import COMPONENT_TABLES, DiffusionSection, Recipe
from corediff.registry import GROUPS, registry

PLUGIN = '''
from typing import Literal
from corediff.config import ComponentConfig
from corediff.interfaces import LossWeighting
import torch

class WConfig(ComponentConfig):
    type: Literal["{name}"] = "{name}"

class W(LossWeighting):
    Config = WConfig
    {declaration}
    def weight(self, t):
        return torch.ones_like(t, dtype=torch.float64)
'''


def _load(fake_dist, name: str, declaration: str):
    module = f"fake_{name}"
    fake_dist(f"fake-{name}", "0.3", {"corediff.loss_weightings": {name: f"{module}:W"}},
              modules={module: PLUGIN.format(name=name, declaration=declaration)})
    return registry("loss_weighting").get(name)


@pytest.mark.parametrize(("declaration", "message"), [
    ('requires = {"degradation": "snr"}',
     "requires['degradation'] must be a set of capability names, e.g. "
     "frozenset({'gaussian'}), not str 'snr'"),
    ('requires = {"degradaton": frozenset({"snr"})}',
     "requires names unknown kind 'degradaton'. Did you mean 'degradation'? Kinds: dataset, "),
    ('requires = {"degradation": frozenset({"gausian"})}',
     "requires['degradation'] names unknown capability 'gausian'. Did you mean 'gaussian'?"),
    ('requires = {"degradation": frozenset({"alpha_bar"})}',
     "requires['degradation'] names 'alpha_bar', which a schedule provides, not a degradation."),
    ('provides = "snr"',
     "provides must be a set of capability names, e.g. frozenset({'gaussian'}), not str 'snr'"),
    ('requires = ["snr"]', "requires must map kinds to capability sets"),
    ('provides = frozenset({"snr"})',
     "provides names 'snr', which a degradation provides, not a loss_weighting."),
    ('provides = [["snr"]]', "provides must be a set of capability names, e.g. "
     "frozenset({'gaussian'}), not list [['snr']]"),
    ('requires = {"degradation": {"snr", 1}}', "requires['degradation'] must be a set of "
     "capability names, e.g. frozenset({'gaussian'}), not set {"),
    ('requires = type("Broken", (dict,), {"items": lambda self: 1 / 0})()',
     "cannot be checked: ZeroDivisionError: division by zero"),
])
def test_capability_mistakes_are_refused_naming_the_plugin(fake_dist, declaration, message):
    with pytest.raises(PluginError) as info:
        _load(fake_dist, "wbad", declaration)
    text = str(info.value)
    assert text.startswith("loss_weighting 'wbad' from fake-wbad 0.3 (target 'fake_wbad:W')")
    assert message in text


def test_a_plugin_providing_another_kinds_capability_is_reported_not_fatal(fake_dist):
    """A sampler promising 'gaussian' (a degradation's capability) is refused when it loads;
    check_plugins reports it and every other plugin still loads."""
    sampler = PLUGIN.replace("LossWeighting", "Sampler").replace(
        "def weight(self, t):\n        return torch.ones_like(t, dtype=torch.float64)",
        "def timesteps(self, start=None):\n        return [1]\n"
        "    def step(self, x, step, denoise):\n        return x, x")
    fake_dist("fake-sbad", "0.1", {"corediff.samplers": {"sbad": "fake_sbad:W"}},
              modules={"fake_sbad": sampler.format(
                  name="sbad", declaration='provides = frozenset({"gaussian"})')})
    failures = [str(f) for f in corediff.check_plugins() if "sbad" in str(f)]
    assert failures == ["sampler 'sbad' from fake-sbad 0.1 (target 'fake_sbad:W'): provides "
                        "names 'gaussian', which a degradation provides, not a sampler."]
    assert registry("sampler").get("ddim").__name__ == "DDIMSampler"


def test_a_valid_declaration_loads(fake_dist):
    cls = _load(fake_dist, "wgood", 'requires = {"degradation": frozenset({"snr"})}')
    assert cls.requires == {"degradation": frozenset({"snr"})}


def test_every_first_party_capability_is_in_the_vocabulary():
    from corediff.capabilities import vocabulary as known

    vocabulary = known()
    for kind in KINDS:
        for name in registry(kind.name).names():
            cls = registry(kind.name).get(name)  # validated on load
            assert set(cls.provides) <= set(vocabulary)
            assert all(vocabulary[c].kind == kind.name for c in cls.provides)


def test_kinds_table_is_the_single_source():
    assert GROUPS == {k.name: k.group for k in KINDS}
    assert COMPONENT_TABLES == {k.table: k.name for k in KINDS}
    assert set(DiffusionSection.model_fields) == {
        k.table[1] for k in KINDS if k.table[0] == "diffusion"}
    assert {"data", "model", "diffusion"} <= set(Recipe.model_fields)
    for kind in KINDS:
        base = kind.base_class()
        assert base.kind == kind.name
        for dep in kind.dependencies:  # kinds built earlier, the data's shape, or the run's
            assert dep in BY_NAME or kind.name == "model" or not kind.in_pipeline


def test_config_dependent_capability_agrees_between_recipe_check_and_runtime(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text((__import__("pathlib").Path(__file__).parents[1]
                       / "recipes" / "svd_afhq.toml").read_text())
    # ε-prediction needs a 'gaussian' degradation: svd is refused whatever its noise
    with pytest.raises(ConfigError, match="provides 'gaussian'"):
        corediff.load_recipe(recipe, ["diffusion.parameterization.type=eps"])
    schedule = corediff.create("schedule", "rank_linear", steps=4)
    noisy = corediff.create("degradation", "svd", schedule=schedule, noise_std=0.1)
    clean = corediff.create("degradation", "svd", schedule=schedule)
    assert noisy.provides == frozenset({"stochastic", "svd"})
    assert clean.provides == frozenset({"deterministic", "svd"})
    cls = registry("degradation").get("svd")
    assert cls.capabilities(noisy.config) == noisy.provides


def test_recipe_validation_refuses_data_the_model_cannot_take(tmp_path):
    from corediff.cli import main

    recipe = __import__("pathlib").Path(__file__).parents[1] / "recipes" / "quickstart.toml"
    overrides = ["--set", "model.type=dit", "--set", "model.patch_size=3"]
    assert main(["recipe", "validate", str(recipe), *overrides]) == 2
    with pytest.raises(ConfigError) as info:
        corediff.load_recipe(recipe, ["model.type=dit", "model.patch_size=3"])
    assert ("[model] model 'dit' cannot take the data of [data] (1×16×16): patch_size 3 does "
            "not divide image_size 16") in str(info.value)
    corediff.load_recipe(recipe, ["model.type=dit", "model.patch_size=4"])  # divides: fine


def test_v01_recipes_with_sample_guidance_scale_still_load(tmp_path):
    source = (__import__("pathlib").Path(__file__).parents[1] / "recipes" / "quickstart.toml")
    text = re.sub(r"\[diffusion.guidance\]\n[^\[]*", "", source.read_text())
    old = text.replace("[sample]\n", "[sample]\nguidance_scale = 3.0\n")
    assert "guidance]" not in old and "guidance_scale = 3.0" in old
    (tmp_path / "old.toml").write_text(old)
    recipe = corediff.load_recipe(tmp_path / "old.toml")
    assert recipe.diffusion.guidance.type == "cfg" and recipe.diffusion.guidance.scale == 3.0


def test_guidance_defaults_to_none_and_is_swappable_with_set():
    source = __import__("pathlib").Path(__file__).parents[1] / "recipes" / "svd_afhq.toml"
    assert corediff.load_recipe(source).diffusion.guidance.type == "none"
    quick = source.with_name("quickstart.toml")
    recipe = corediff.load_recipe(quick, ["diffusion.guidance.type=cfg_rescale"])
    assert recipe.diffusion.guidance.type == "cfg_rescale"
    assert recipe.diffusion.guidance.scale == 2.0  # kept: cfg_rescale has 'scale' too
