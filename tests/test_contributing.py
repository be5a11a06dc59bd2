"""The three example plugins in CONTRIBUTING.md are real: each file is executed, registered
in-process and passes corediff.testing; the sampler agrees with DDIM where no threshold
applies, the guidance is plain CFG at its end point, the model takes the null label."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

import corediff
from corediff import testing
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


def test_the_doc_holds_three_files():
    assert sorted(FILES) == ["my_package/cfg_linear.py", "my_package/ddim_threshold.py",
                             "my_package/diffusers_unet.py"]


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
