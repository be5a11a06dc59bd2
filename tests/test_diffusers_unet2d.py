"""The first-party ``diffusers_unet2d`` model: diffusers' UNet2DModel under corediff's
null-label contract, built from a recipe, refusing keys UNet2DModel does not take."""

from __future__ import annotations

import pytest
import torch

import corediff
from corediff.errors import ConfigError

pytest.importorskip("diffusers")

RECIPE = {
    "data": {"type": "digits", "image_size": 8},
    "model": {"type": "diffusers_unet2d"},
    "diffusion": {
        "schedule": {"type": "cosine", "steps": 20}, "degradation": {"type": "gaussian"},
        "parameterization": {"type": "eps"}, "loss_weighting": {"type": "simple"},
        "sampler": {"type": "ddim", "steps": 2}, "prior": {"type": "normal"},
        "guidance": {"type": "cfg", "scale": 2.0},
    },
    "train": {"steps": 2, "batch_size": 4, "label_dropout": 0.1},
    "sample": {"n": 10, "batch_size": 10},
    "run": {"device": "cpu"},
}


def test_class_conditional_with_the_null_label_trains_and_samples_with_guidance(tmp_path):
    from diffusers import UNet2DModel

    pipeline = corediff.train(corediff.parse_recipe(RECIPE), run_dir=tmp_path / "run")
    model = pipeline.model
    assert isinstance(model.net, UNet2DModel)
    assert model.net.class_embedding.num_embeddings == 11  # ten digits + the null label 10
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 5, 19])
    y = torch.tensor([0, 9, 10])
    with torch.no_grad():
        expected = model.net(x, t, class_labels=y).sample
        assert torch.equal(model(x, t, y), expected)
        assert torch.equal(model(x, t), model(x, t, torch.full((3,), 10)))  # y=None: null
    images = pipeline.sample(10, labels=3, seed=0)
    assert images.shape == (10, 1, 8, 8) and bool(images.isfinite().all())


def test_unet_keys_are_checked_against_unet2dmodel():
    bad = {**RECIPE, "model": {"type": "diffusers_unet2d", "unet": {"layers_per_blok": 1}}}
    with pytest.raises(ConfigError, match=r"\[model\] unet: .*not UNet2DModel arguments: "
                                          r"layers_per_blok"):
        corediff.parse_recipe(bad)
    data_key = {**RECIPE, "model": {"type": "diffusers_unet2d", "unet": {"sample_size": 8}}}
    with pytest.raises(ConfigError, match="sample_size come from the data"):
        corediff.parse_recipe(data_key)
    deep = {**RECIPE, "model": {"type": "diffusers_unet2d", "unet": {
        "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
        "down_block_types": ["DownBlock2D"] * 4, "up_block_types": ["UpBlock2D"] * 4}},
        "data": {"type": "digits", "image_size": 12}}
    with pytest.raises(ConfigError, match="image_size 12 is not divisible by 8"):
        corediff.parse_recipe(deep)
