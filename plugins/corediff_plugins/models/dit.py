"""Diffusion Transformer, DiT (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers", §3.2) built from timm's ViT layers.

The image is cut into p×p patches (timm ``PatchEmbed``) plus fixed 2-D sine-cosine position
embeddings; each block conditions on c = emb(t) + emb(y) by adaLN-Zero:
``(γ1, β1, α1, γ2, β2, α2) = Linear(SiLU(c))``,
``x += α1 · Attn(LN(x)(1 + γ1) + β1)``, ``x += α2 · MLP(LN(x)(1 + γ2) + β2)``, with the
modulation layers zero-initialised so every block starts as the identity. A final adaLN layer
maps each token to p·p·out_channels values, unpatchified back to the image.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from einops import rearrange
from pydantic import Field, PositiveFloat, PositiveInt
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention
from torch import Tensor, nn

from corediff.config import ComponentConfig
from corediff.errors import ConfigError
from corediff.interfaces import DataSpec, Model
from corediff_plugins.models.layers import (
    LabelEmbedding,
    TimestepMLP,
    count_params,
    timestep_embedding,
)

#: preset -> (hidden_size, depth, num_heads)
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (128, 6, 4),
    "small": (192, 8, 4),
}
#: Patch size used when none is given: the smallest keeping at most this many tokens per side.
MAX_TOKENS_PER_SIDE = 16


class DiTConfig(ComponentConfig):
    type: Literal["dit"] = "dit"
    preset: Literal["tiny", "small"] | None = Field(
        "small", description="Size preset supplying hidden_size, depth and num_heads left unset."
    )
    hidden_size: PositiveInt | None = Field(None, description="Token width.")
    depth: PositiveInt | None = Field(None, description="Number of transformer blocks.")
    num_heads: PositiveInt | None = Field(None, description="Attention heads per block.")
    patch_size: PositiveInt | None = Field(
        None, description="Patch side p (None: image_size // 16, at least 1)."
    )
    mlp_ratio: PositiveFloat = Field(4.0, description="MLP hidden width over hidden_size.")


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        gelu = partial(nn.GELU, approximate="tanh")
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=gelu)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = rearrange(
            self.adaln(c), "b (six d) -> six b 1 d", six=6
        )
        x = x + gate1 * self.attn(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN then a linear map of each token to its p·p·C patch values."""

    def __init__(self, dim: int, patch_values: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_values)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = rearrange(self.adaln(c), "b (two d) -> two b 1 d", two=2)
        return self.linear(_modulate(self.norm(x), shift, scale))


def sincos_position_embedding(grid: int, dim: int) -> Tensor:
    """Fixed 2-D embedding [grid², dim]: half the channels encode the row, half the column."""
    index = torch.arange(grid)
    rows, cols = index.repeat_interleave(grid), index.repeat(grid)
    return torch.cat([timestep_embedding(rows, dim // 2), timestep_embedding(cols, dim // 2)], 1)


class DiT(Model):
    """Diffusion Transformer; ``forward(x, t, y=None)`` with t the original step indices."""

    Config = DiTConfig

    @staticmethod
    def architecture(cfg: DiTConfig) -> tuple[int | None, int | None, int | None]:
        """(hidden_size, depth, num_heads): the config's, else its preset's."""
        preset = PRESETS[cfg.preset] if cfg.preset is not None else (None,) * 3
        return tuple(field if field is not None else default for field, default in zip(
            (cfg.hidden_size, cfg.depth, cfg.num_heads), preset, strict=True
        ))  # type: ignore[return-value]

    @staticmethod
    def patch_side(cfg: DiTConfig, image_size: int) -> int:
        """p: the config's patch_size, else image_size // 16 (at least 1)."""
        return cfg.patch_size or max(1, image_size // MAX_TOKENS_PER_SIDE)

    @classmethod
    def check_data_spec(cls, config: DiTConfig, spec: DataSpec) -> list[str]:
        dim, depth, heads = cls.architecture(config)
        if dim is None or depth is None or heads is None:
            return ["preset = none needs hidden_size, depth and num_heads"]
        problems = []
        if dim % heads or dim % 4:
            problems.append(f"hidden_size {dim} must be a multiple of 4 and of num_heads {heads}")
        p = cls.patch_side(config, spec.image_size)
        if spec.image_size % p:
            problems.append(f"patch_size {p} does not divide image_size {spec.image_size}")
        return problems

    def __init__(
        self,
        config: DiTConfig | None = None,
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
        problems = self.check_data_spec(self.config, DataSpec(in_channels, image_size, num_classes))
        if problems:
            raise ConfigError(f"model 'dit': {problems[0]}")
        dim, depth, heads = self.architecture(self.config)
        self.patch_size = p = self.patch_side(self.config, image_size)
        self.grid = image_size // p
        self.patch_embed = PatchEmbed(image_size, p, in_channels, dim)
        self.register_buffer(
            "pos_embed", sincos_position_embedding(self.grid, dim)[None], persistent=False
        )
        self.time_embed = TimestepMLP(256, dim)
        self.label_embed = LabelEmbedding(num_classes, dim) if num_classes else None
        ratio = self.config.mlp_ratio
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, ratio) for _ in range(depth))
        self.final = FinalLayer(dim, p * p * out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.proj.weight.flatten(1))
        for mlp in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(mlp.weight, std=0.02)
        if self.label_embed is not None:
            nn.init.normal_(self.label_embed.table.weight, std=0.02)
        for layer in [block.adaln[-1] for block in self.blocks] + [
            self.final.adaln[-1], self.final.linear
        ]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def num_params(self) -> int:
        return count_params(self)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.time_embed(t)
        if self.label_embed is not None:
            c = c + self.label_embed(y, x.shape[0], x.device)
        h = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            h = block(h, c)
        h = self.final(h, c)
        return rearrange(
            h, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid, p=self.patch_size,
            q=self.patch_size,
        )
