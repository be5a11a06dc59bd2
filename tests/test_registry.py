"""Registry behaviour with real entry points (first-party plugins) and fake distributions."""

from __future__ import annotations

import pytest

import corediff
from corediff.errors import PluginError
from corediff.interfaces import Degradation
from corediff.registry import list_plugins, registry

GOOD_PLUGIN = '''
from typing import Literal
from corediff.config import ComponentConfig
from corediff.interfaces import Degradation

class ShiftConfig(ComponentConfig):
    type: Literal["{name}"] = "{name}"

class Shift(Degradation):
    Config = ShiftConfig
    provides = frozenset({{"deterministic"}})
    def degrade(self, x0, t, noise=None):
        return x0 + t.view(-1, 1, 1, 1)
'''


def test_first_party_plugins_are_found_through_entry_points():
    names = registry("degradation").names()
    assert {"gaussian", "svd", "blur"} <= set(names)
    infos = {info.name: info for info in list_plugins("sampler")["sampler"]}
    assert infos["ddim"].distribution == "corediff"
    assert infos["ddim"].target == "corediff_plugins.samplers.ddim:DDIMSampler"


def test_names_are_in_natural_order(fake_dist):
    fake_dist("fake-order", "1.0", {"corediff.samplers": {
        "step10": "fake_o:A", "step2": "fake_o:A", "step1": "fake_o:A"}})
    names = [n for n in registry("sampler").names() if n.startswith("step")]
    assert names == ["step1", "step2", "step10"]


def test_unknown_name_lists_available_and_suggests():
    with pytest.raises(PluginError) as info:
        registry("sampler").get("ddimm")
    text = str(info.value)
    assert "unknown sampler 'ddimm'. Did you mean 'ddim'?" in text
    assert "Available: " in text and "cold_improved" in text and "ddpm" in text


def test_unknown_kind_is_refused():
    with pytest.raises(PluginError, match="unknown component kind 'sampelr'. Did you mean"):
        registry("sampelr")


def test_same_name_from_two_distributions_is_an_error_naming_both(fake_dist):
    fake_dist("fake-clash", "2.5", {"corediff.degradations": {"gaussian": "fake_clash:X"}})
    with pytest.raises(PluginError) as info:
        registry("degradation").get("gaussian")
    text = str(info.value)
    assert "degradation 'gaussian' is provided by more than one distribution" in text
    assert "corediff 0.1.0" in text and "fake-clash 2.5 (fake_clash:X)" in text
    # other plugins of the kind stay usable
    assert registry("degradation").get("blur").__name__ == "BlurDegradation"


def test_broken_plugin_fails_only_where_used(fake_dist):
    fake_dist(
        "fake-broken", "0.3", {"corediff.degradations": {"broken": "fake_broken:Thing"}},
        modules={"fake_broken": "import not_a_module_anywhere\n"},
    )
    assert "broken" in registry("degradation").names()  # listing still works
    with pytest.raises(PluginError) as info:
        registry("degradation").get("broken")
    assert str(info.value) == (
        "degradation 'broken' from fake-broken 0.3 failed to load (target 'fake_broken:Thing'):"
        " ModuleNotFoundError: No module named 'not_a_module_anywhere'"
    )
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    failures = corediff.check_plugins()
    assert [str(f) for f in failures if "broken" in str(f)] == [str(info.value)]


def test_plugin_of_wrong_base_class_is_refused(fake_dist):
    fake_dist(
        "fake-wrongbase", "1.0", {"corediff.samplers": {"shift": "fake_wrongbase:Shift"}},
        modules={"fake_wrongbase": GOOD_PLUGIN.format(name="shift")},
    )
    with pytest.raises(PluginError, match=r"is not a subclass of corediff.interfaces.Sampler"):
        registry("sampler").get("shift")


def test_config_type_must_equal_entry_point_name(fake_dist):
    fake_dist(
        "fake-mismatch", "1.0", {"corediff.degradations": {"shift": "fake_mismatch:Shift"}},
        modules={"fake_mismatch": GOOD_PLUGIN.format(name="shifted")},
    )
    with pytest.raises(PluginError) as info:
        registry("degradation").get("shift")
    assert "its Config declares type Literal['shifted'], expected Literal['shift']" in str(
        info.value
    )


def test_valid_fake_plugin_loads_and_builds(fake_dist):
    fake_dist(
        "fake-good", "1.0", {"corediff.degradations": {"shift": "fake_good:Shift"}},
        modules={"fake_good": GOOD_PLUGIN.format(name="shift")},
    )
    import torch

    schedule = corediff.create("schedule", "linear", steps=100)
    shift = corediff.create("degradation", "shift", schedule=schedule)
    out = shift.degrade(torch.zeros(2, 1, 2, 2), torch.tensor([0, 3]))
    assert out[0].abs().sum() == 0 and torch.all(out[1] == 3)


def test_in_process_registration_decorator():
    from typing import Literal

    from corediff.config import ComponentConfig

    class DoubleConfig(ComponentConfig):
        type: Literal["double_test"] = "double_test"

    @corediff.register("degradation")
    class Double(Degradation):
        Config = DoubleConfig

        def degrade(self, x0, t, noise=None):
            return 2 * x0

    try:
        assert registry("degradation").get("double_test") is Double
        assert "double_test" in registry("degradation").names()
        with pytest.raises(PluginError, match="already registered"):
            corediff.register("degradation")(Double)
        with pytest.raises(PluginError, match="already registered"):
            corediff.register("degradation", "gaussian")(Double)
    finally:
        registry("degradation").unregister("double_test")
    assert "double_test" not in registry("degradation").names()


def test_create_validates_config_with_a_clear_error():
    with pytest.raises(corediff.ConfigError) as info:
        corediff.create("schedule", "linear", steps=0)
    assert "schedule 'linear'" in str(info.value) and "steps" in str(info.value)


def test_building_a_recipe_imports_only_the_plugins_it_names():
    import subprocess
    import sys
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    code = (
        "import sys, corediff\n"
        f"recipe = corediff.load_recipe({str(recipe)!r})\n"
        "corediff.build(recipe)\n"
        "from importlib.metadata import entry_points\n"
        "from corediff.registry import GROUPS\n"
        "targets = {ep.value.partition(':')[0] for g in GROUPS.values()\n"
        "           for ep in entry_points(group=g)}\n"
        "mods = sorted(m for m in sys.modules if m in targets)\n"
        "print(','.join(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    imported = {m.split(".")[-1] for m in out[0].split(",")}
    import tomllib

    data = tomllib.loads(recipe.read_text())
    named = {data["data"]["type"], data["model"]["type"]}
    named |= {table["type"] for table in data["diffusion"].values()}
    from corediff.kinds import KINDS  # tables a recipe may omit name their default plugin

    named |= {kind.default["type"] for kind in KINDS
              if kind.default and not kind.many and kind.table[-1] not in data["diffusion"]}
    assert imported == named


def test_public_functions_are_not_shadowed_by_submodules():
    import importlib

    for module in ("corediff.builder", "corediff.recipe", "corediff.registry"):
        importlib.import_module(module)
    assert callable(corediff.build) and callable(corediff.create)
    assert callable(corediff.load_recipe) and callable(corediff.list_plugins)
