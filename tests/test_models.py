"""Model plugins: U-Net and DiT shapes, conditioning, initialisation and parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding

from corediff.errors import ConfigError
from corediff_plugins.models.dit import DiT, DiTConfig
from corediff_plugins.models.layers import timestep_embedding
from corediff_plugins.models.unet import AttentionBlock, UNet, UNetConfig

TINY = {"unet": (UNet, UNetConfig(preset="tiny")), "dit": (DiT, DiTConfig(preset="tiny"))}


def build(name: str, **kwargs: int | None):
    cls, config = TINY[name]
    args = {"in_channels": 3, "out_channels": 3, "image_size": 16, "num_classes": None} | kwargs
    return cls(config, **args)


def perturb_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter a random value, undoing the zero initialisations."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def test_timestep_embedding_matches_diffusers():
    t = torch.randint(0, 1001, (7,), generator=torch.Generator().manual_seed(1))
    for dim in (32, 64, 256):
        ours = timestep_embedding(t, dim)
        ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["unet", "dit"])
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 16), (1, 28), (3, 32)])
def test_output_shape(name, channels, size):
    model = build(name, in_channels=channels, out_channels=2 * channels, image_size=size)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(2))
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == (2, 2 * channels, size, size)
    assert torch.all(out == 0), "the last layer is zero-initialised"


def test_unet_tiny_64():
    model = build("unet", image_size=64, out_channels=6)
    assert model(torch.randn(1, 3, 64, 64), torch.tensor([5])).shape == (1, 6, 64, 64)


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_class_and_step_conditioning(name):
    torch.manual_seed(0)
    model = build(name, num_classes=10).eval()
    perturb_(model)
    x = torch.randn(1, 3, 16, 16).expand(4, -1, -1, -1)
    t = torch.full((4,), 40)
    out = model(x, t, torch.tensor([0, 7, 10, -1]))
    assert not torch.allclose(out[0], out[1], atol=1e-4), "labels change the output"
    torch.testing.assert_close(out[2], out[3])  # -1 is the null label (index num_classes)
    torch.testing.assert_close(model(x, t), out[2:].repeat(2, 1, 1, 1))  # y=None is null too
    assert not torch.allclose(model(x, t + 100), model(x, t), atol=1e-4), "t changes the output"


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build(name, num_classes=3)
    perturb_(model)
    x = torch.randn(6, 3, 16, 16)
    model(x, torch.arange(6) * 100, torch.tensor([0, 1, 2, 3, 0, 1])).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_deterministic_under_seed(name):
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        states.append(build(name).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize(
    ("preset", "target"),
    [("tiny", 0.46e6), ("small", 3.65e6), ("base", 35.7e6), ("large", 142.8e6)],
)
def test_unet_preset_sizes(preset, target):
    device = "cpu" if preset in ("tiny", "small") else "meta"
    with torch.device(device):
        model = UNet(UNetConfig(preset=preset), in_channels=3, out_channels=3, image_size=64)
    assert abs(model.num_params / target - 1) < 0.1, model.num_params


@pytest.mark.parametrize(("preset", "low", "high"), [("tiny", 1e6, 3e6), ("small", 4e6, 8e6)])
def test_dit_preset_sizes(preset, low, high):
    model = DiT(DiTConfig(preset=preset), in_channels=3, out_channels=3, image_size=32)
    assert low < model.num_params < high


def test_attention_block_matches_explicit_softmax():
    torch.manual_seed(4)
    block = AttentionBlock(16, num_heads=4)
    perturb_(block)
    x = torch.randn(2, 16, 4, 5)
    h = block.qkv(block.norm(x).flatten(2))  # [B, 3C, L]
    q, k, v = h.view(2, 3, 4, 4, 20).unbind(1)  # [B, heads, d, L]
    weights = torch.softmax(torch.einsum("bndl,bndm->bnlm", q, k) / math.sqrt(4), dim=-1)
    attended = torch.einsum("bnlm,bndm->bndl", weights, v).reshape(2, 16, 20)
    expected = x + block.proj(attended).view(2, 16, 4, 5)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_dit_unpatchify_layout():
    torch.manual_seed(5)
    model = DiT(DiTConfig(preset="tiny", patch_size=4), in_channels=2, out_channels=2,
                image_size=16)
    perturb_(model)
    tokens = {}
    model.final.register_forward_hook(lambda module, args, out: tokens.setdefault("out", out))
    out = model(torch.randn(1, 2, 16, 16), torch.tensor([3]))
    patches = tokens["out"][0].view(4, 4, 4, 4, 2)  # [row, col, p, q, channel]
    for row in range(4):
        for col in range(4):
            patch = out[0, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4]
            torch.testing.assert_close(patch, patches[row, col].permute(2, 0, 1))


def test_config_errors():
    with pytest.raises(ConfigError, match="patch_size 3 does not divide image_size 16"):
        DiT(DiTConfig(patch_size=3), in_channels=1, out_channels=1, image_size=16)
    with pytest.raises(ConfigError, match="needs base_channels"):
        UNet(UNetConfig(preset=None, base_channels=8), in_channels=1, out_channels=1,
             image_size=16)
    with pytest.raises(ConfigError, match="num_heads 5"):
        UNet(UNetConfig(preset="tiny", num_heads=5), in_channels=1, out_channels=1,
             image_size=16)
