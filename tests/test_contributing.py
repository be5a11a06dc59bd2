"""The four example plugins in CONTRIBUTING.md are real: each file is executed, registered
in-process and passes corediff.testing; the sampler agrees with DDIM where no threshold
applies, the guidance is plain CFG at its end point, the model takes the null label, the
objective is ‖·‖²/(2c) when c is large."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

import corediff
from corediff import testing
from corediff.interfaces import ObjectiveBatch
from corediff.registry import registry

DOC = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
FILES = dict(re.findall(r"```python\n# file: (\S+)\n(.*?)```", DOC.read_text(), re.S))


def _load(path: str) -> types.ModuleType:
    name = "contrib_" + Path(path).stem
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(FILES[path], path, "exec"), module.__dict__)  # noqa: S102 - our own doc
    return module


@pytest.fixture
def plugin():
    added = []

    def register(path: str, kind: str, cls_name: str) -> type:
        cls = getattr(_load(path), cls_name)
        corediff.register(kind)(cls)
        added.append((kind, cls.Config.model_fields["type"].default))
        return cls

    yield register
    for kind, name in added:
        registry(kind).unregister(name)


def test_the_doc_holds_four_files():
    assert sorted(FILES) == ["my_package/cfg_linear.py", "my_package/ddim_threshold.py",
                             "my_package/diffusers_unet.py", "my_package/huber_denoising.py"]


def test_sampler_example(plugin):
    plugin("my_package/ddim_threshold.py", "sampler", "DDIMThresholdSampler")
    assert testing.check_plugin("sampler", "ddim_threshold", devices=["cpu"]) >= 1
    schedule = corediff.create("schedule", "cosine", steps=100)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    param = corediff.create("parameterization", "x0", degradation=degradation)
    ours = corediff.create("sampler", "ddim_threshold", degradation=degradation,
                           parameterization=param, steps=10)
    ddim = corediff.create("sampler", "ddim", degradation=degradation, parameterization=param,
                           steps=10)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    small = lambda x_t, t: 0.5 * torch.tanh(x_t)  # noqa: E731 - |x̂0| < 1: no thresholding
    torch.testing.assert_close(ours.sample(small, x).sample, ddim.sample(small, x).sample)


def test_guidance_example(plugin):
    plugin("my_package/cfg_linear.py", "guidance", "LinearCFG")
    assert testing.check_plugin("guidance", "cfg_linear", devices=["cpu"]) >= 1
    schedule = corediff.create("schedule", "cosine", steps=100)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    param = corediff.create("parameterization", "v", degradation=degradation)
    linear = corediff.create("guidance", "cfg_linear", degradation=degradation,
                             parameterization=param, max_scale=3.0)
    cfg = corediff.create("guidance", "cfg", degradation=degradation, parameterization=param,
                          scale=2.0)
    cond, uncond, x = (torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(i))
                       for i in range(3))
    t = torch.tensor([50])  # w(50) = 1 + 2 · 0.5 = 2
    torch.testing.assert_close(linear.combine(cond, uncond, x, t).x0,
                               cfg.combine(cond, uncond, x, t).x0)
    assert not linear.active(100) and linear.active(99)


def test_model_example(plugin):
    pytest.importorskip("diffusers")
    cls = plugin("my_package/diffusers_unet.py", "model", "DiffusersUNet")
    assert testing.check_plugin("model", "diffusers_unet", devices=["cpu"]) == 1
    spec = corediff.DataSpec(channels=1, image_size=7, num_classes=None)
    assert cls.check_data_spec(cls.Config(), spec) == ["image_size 7 is not divisible by 2"]


def test_objective_example(plugin):
    """With c ≫ ‖a − b‖, √(‖a − b‖² + c²) − c = ‖a − b‖²/(2c)·(1 + O(‖a − b‖²/c²)): the
    example is then the ε-MSE of ``denoising`` (same draws) times C·H·W/(2c)."""
    plugin("my_package/huber_denoising.py", "objective", "HuberDenoising")
    assert testing.check_plugin("objective", "huber_denoising", devices=["cpu"]) >= 1
    schedule = corediff.create("schedule", "cosine", steps=100)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    param = corediff.create("parameterization", "eps", degradation=degradation)
    parts = {"degradation": degradation, "parameterization": param,
             "loss_weighting": corediff.create("loss_weighting", "simple",
                                               degradation=degradation, parameterization=param),
             "time_sampler": corediff.create("time_sampler", "uniform", degradation=degradation)}
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    x0 = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    c_scale, losses = 1e4, []
    for name, extra in (("huber_denoising", {"c_scale": c_scale}), ("denoising", {})):
        objective = corediff.create("objective", name, model=net, **parts, **extra)
        batch = ObjectiveBatch(x0, None, None, lambda x, t, y: net(x),
                               lambda t, noise: degradation.degrade(x0, t, noise),
                               torch.Generator().manual_seed(2), True)
        losses.append(objective.losses(batch).per_sample)
    c = c_scale * 4
    torch.testing.assert_close(losses[0], losses[1] * 16 / (2 * c), rtol=1e-4, atol=0)


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_examples_run_in_a_pipeline_under_a_fractional_step_solver(plugin, solver):
    """The model and guidance examples in a class-conditional pipeline whose σ-space solver
    visits fractional steps: generate (labels and the null label) and restore (no labels,
    so the model builds the null label itself from a float t) run and give finite images.
    (The model example once built its null label with torch.full_like(t, ...): a float
    under these solvers, which the embedding refused.)"""
    pytest.importorskip("diffusers")
    model_cls = plugin("my_package/diffusers_unet.py", "model", "DiffusersUNet")
    plugin("my_package/cfg_linear.py", "guidance", "LinearCFG")
    recipe = corediff.load_recipe(Path(__file__).resolve().parents[1] / "recipes" /
                                  "quickstart.toml", ["data.image_size=8"])
    spec = corediff.DataSpec(channels=1, image_size=8, num_classes=10)
    built = corediff.build(recipe, data_spec=spec)
    pipeline = built.replace(
        sampler=corediff.create("sampler", solver, degradation=built.degradation,
                                parameterization=built.parameterization, steps=4,
                                sigmas="karras"),
        guidance=corediff.create("guidance", "cfg_linear", degradation=built.degradation,
                                 parameterization=built.parameterization, max_scale=2.0),
        model=model_cls(in_channels=1, out_channels=1, image_size=8, num_classes=10))
    assert any(t != int(t) for t in pipeline.sampler.timesteps()), "no fractional step"
    images = pipeline.generate(4, labels=3, steps=4).images
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    degraded, direct, sample = pipeline.restore(x0, 500)
    assert torch.isfinite(images).all() and torch.isfinite(sample).all()
    assert sample.shape == direct.shape == degraded.shape == x0.shape
