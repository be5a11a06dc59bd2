"""U-Net denoiser of improved DDPM (Nichol & Dhariwal 2021, §A / Ho et al. 2020, Appendix B).

A sinusoidal embedding of the step t goes through an MLP (plus a class embedding when
conditional); residual blocks read it through scale-shift normalisation,
``h = GroupNorm(h) · (1 + s) + b`` with (s, b) = Linear(SiLU(emb)) (FiLM); self-attention
runs at the chosen resolutions; skip connections join each down level to its up level. The
last convolution is zero-initialised so the network starts as the zero function.

Presets (``base_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_resolutions``)
aim at the sizes of the DDPM notes (0.46M, 3.65M, 35.7M, 142.8M) and give, for 3-channel
64×64 images: tiny 0.44M, small 3.50M, base 36.4M, large 145.4M parameters. Downsampling
stops once the feature map would fall below 4×4 (or has odd size); the remaining levels then
run at that resolution.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from corediff.config import ComponentConfig
from corediff.errors import ConfigError
from corediff.interfaces import DataSpec, Model
from corediff_plugins.models.layers import LabelEmbedding, TimestepMLP, count_params

#: preset -> (base_channels, channel_mult, num_res_blocks, attention_resolutions)
PRESETS: dict[str, tuple[int, tuple[int, ...], int, tuple[int, ...]]] = {
    "tiny": (16, (1, 2, 2), 2, (16,)),
    "small": (32, (1, 2, 2, 3), 2, (16, 8)),
    "base": (48, (1, 2, 4, 8), 2, (16, 8)),
    "large": (96, (1, 2, 4, 8), 2, (16, 8)),
}
MIN_RESOLUTION = 4


class UNetConfig(ComponentConfig):
    type: Literal["unet"] = "unet"
    preset: Literal["tiny", "small", "base", "large"] | None = Field(
        "small", description="Size preset supplying every architecture field left unset."
    )
    base_channels: PositiveInt | None = Field(
        None, description="Channels of the first level (the time embedding has 4×)."
    )
    channel_mult: tuple[PositiveInt, ...] | None = Field(
        None, min_length=1, description="Channel multiplier per resolution level."
    )
    num_res_blocks: PositiveInt | None = Field(None, description="Residual blocks per level.")
    attention_resolutions: tuple[PositiveInt, ...] | None = Field(
        None, description="Feature-map sizes (e.g. 16, 8) at which self-attention runs."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout inside residual blocks.")
    num_heads: PositiveInt = Field(4, description="Attention heads.")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlock(nn.Module):
    """Two 3×3 convs; the step/class embedding enters by scale-shift norm before the second."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out))
        self.out_norm = _norm(c_out)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = rearrange(self.emb_layers(emb), "b c -> b c 1 1").chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, residual, zero-initialised output."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ConfigError(
                f"model.num_heads {num_heads} does not divide the {channels} channels of an "
                "attention level; choose a divisor"
            )
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        qkv = self.qkv(self.norm(x).flatten(2))
        # one copy into [3, B, heads, L, d]: q, k and v are then each contiguous, so CUDA's
        # SDPA can take its flash / memory-efficient kernels instead of the math fallback
        q, k, v = rearrange(qkv, "b (three n d) l -> three b n l d", three=3,
                            n=self.num_heads).contiguous().unbind(0)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        out = self.proj(rearrange(out, "b n l d -> b (n d) l"))
        return x + rearrange(out, "b c (h w) -> b c h w", h=h, w=w)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """A sequence of blocks that all take (x, emb)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block in self:
            x = block(x, emb)
        return x


class UNet(Model):
    """Improved-DDPM U-Net; ``forward(x, t, y=None)`` with t the original step indices."""

    Config = UNetConfig

    @staticmethod
    def architecture(cfg: UNetConfig) -> list:
        """(base_channels, channel_mult, num_res_blocks, attention_resolutions): the config's,
        else its preset's."""
        preset = PRESETS[cfg.preset] if cfg.preset is not None else (None,) * 4
        return [field if field is not None else default for field, default in zip(
            (cfg.base_channels, cfg.channel_mult, cfg.num_res_blocks, cfg.attention_resolutions),
            preset, strict=True,
        )]

    @classmethod
    def check_data_spec(cls, config: UNetConfig, spec: DataSpec) -> list[str]:
        base, mult, blocks, attention = cls.architecture(config)
        if any(value is None for value in (base, mult, blocks, attention)):
            return ["preset = none needs base_channels, channel_mult, num_res_blocks and "
                    "attention_resolutions"]
        return []  # any size: downsampling stops at odd or MIN_RESOLUTION-sized maps

    def __init__(
        self,
        config: UNetConfig | None = None,
        *,
        in_channels: int,
        out_channels: int,
        image_size: int,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(
            config, in_channels=in_channels, out_channels=out_channels, image_size=image_size,
            num_classes=num_classes,
        )
        cfg = self.config
        problems = self.check_data_spec(cfg, DataSpec(in_channels, image_size, num_classes))
        if problems:
            raise ConfigError(f"model 'unet': {problems[0]}")
        arch = self.architecture(cfg)
        base, mult, blocks, attention = arch
        emb_dim = 4 * base
        self.time_embed = TimestepMLP(base, emb_dim)
        self.label_embed = LabelEmbedding(num_classes, emb_dim) if num_classes else None

        def level(c_in: int, c_out: int, resolution: int) -> list[nn.Module]:
            stage: list[nn.Module] = [ResBlock(c_in, c_out, emb_dim, cfg.dropout)]
            if resolution in attention:
                stage.append(AttentionBlock(c_out, cfg.num_heads))
            return stage

        self.input_conv = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        skips, channels, resolution = [base], base, image_size
        downsampled: list[bool] = []
        for i, m in enumerate(mult):
            for _ in range(blocks):
                self.down.append(Stage(level(channels, base * m, resolution)))
                channels = base * m
                skips.append(channels)
            can_halve = resolution % 2 == 0 and resolution // 2 >= MIN_RESOLUTION
            downsampled.append(i < len(mult) - 1 and can_halve)
            if downsampled[-1]:
                self.down.append(Stage([Downsample(channels)]))
                resolution //= 2
                skips.append(channels)
        self.middle = Stage([
            ResBlock(channels, channels, emb_dim, cfg.dropout),
            AttentionBlock(channels, cfg.num_heads),
            ResBlock(channels, channels, emb_dim, cfg.dropout),
        ])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            upsample = i > 0 and downsampled[i - 1]
            for j in range(blocks + int(i == 0 or upsample)):
                stage = level(channels + skips.pop(), base * m, resolution)
                channels = base * m
                if j == blocks and upsample:
                    stage.append(Upsample(channels))
                    resolution *= 2
                self.up.append(Stage(stage))
        self.out = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3,
                                                                        padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def num_params(self) -> int:
        return count_params(self)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_embed(t)
        if self.label_embed is not None:
            emb = emb + self.label_embed(y, x.shape[0], x.device)
        h = self.input_conv(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
