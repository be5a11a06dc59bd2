"""The README's recipe parses, builds, and its three plugins work together."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import torch

import corediff
from corediff.denoiser import Denoiser
from corediff.interfaces import DataSpec

README = Path(__file__).parents[1] / "README.md"


def test_readme_recipe():
    snippet = re.search(r"```toml\n(.*?)```", README.read_text(), re.S).group(1)
    data = tomllib.loads(snippet)
    data.update({"data": {"type": "digits", "image_size": 16},
                 "model": {"type": "unet", "preset": "tiny"}})
    recipe = corediff.parse_recipe(data, "README.md")
    pipeline = corediff.build(recipe, data_spec=DataSpec(channels=1, image_size=16,
                                                         num_classes=10))
    assert (pipeline.sampler.config.type, pipeline.guidance.config.type,
            pipeline.loss_weighting.config.type) == ("deis", "cfgpp", "p2")
    null = pipeline.model.null_label

    def network(x, t, y):  # a cheap stand-in for the U-Net, label dependent
        return 0.5 * torch.tanh(x) + 0.02 * y.to(x.dtype).view(-1, 1, 1, 1)

    denoise = Denoiser(network, pipeline.parameterization, guidance=pipeline.guidance,
                       labels=torch.tensor([0, 7]), null_label=null)
    x_T = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    result = pipeline.sampler.sample(denoise, x_T)
    assert result.nfe == pipeline.sampler.nfe() == 20
    assert torch.isfinite(result.sample).all()
    weight = pipeline.loss_weighting.weight(torch.arange(1, 1001))
    assert torch.isfinite(weight).all() and (weight > 0).all()
