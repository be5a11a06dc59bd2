"""diffusers' ``UNet2DModel`` — the DDPM U-Net of Ho et al. 2020 (Appendix B), as shipped in
diffusers pipeline folders (``google/ddpm-cifar10-32``, ``google/ddpm-celebahq-256``) — as a
corediff model, so corediff samplers and guidance drive pretrained diffusers checkpoints and
corediff trains the same network.

``unet`` holds the keys of diffusers' ``config.json`` of the model (block types, channels,
attention, normalisation, time embedding, ...); the data decides ``sample_size`` and the
channels. Class-conditional data follows corediff's null-label contract: the class embedding
has ``num_classes + 1`` rows, the last (``num_classes``) meaning "no class"; ``y=None`` uses
it. TOML has no null: ``unet_none`` names the arguments set to None (older pipeline
folders, e.g. ``attention_head_dim`` of ``google/ddpm-cifar10-32``: one head per block).
``timestep_offset`` is added to the time value the network sees: -1 for weights trained by
diffusers, whose timestep k has ᾱ = ``alphas_cumprod[k]``, corediff's step k + 1
(``corediff import diffusers`` sets it). Needs ``pip install diffusers``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import DataSpec, Model

#: UNet2DModel keys that come from the data, not from ``unet``.
FROM_DATA = ("sample_size", "in_channels", "out_channels", "num_class_embeds")
#: A small default: two levels of 32 and 64 channels, attention at the lower one.
SMALL = {"block_out_channels": [32, 64], "layers_per_block": 1,
         "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
         "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8}


def unet_keys() -> set[str]:
    """The constructor arguments of diffusers' UNet2DModel (imports diffusers)."""
    from diffusers import UNet2DModel

    return set(inspect.signature(UNet2DModel.__init__).parameters) - {"self"}


class DiffusersUNet2DConfig(ComponentConfig):
    type: Literal["diffusers_unet2d"] = "diffusers_unet2d"
    unet: dict[str, Any] = Field(
        default_factory=lambda: dict(SMALL),
        description="UNet2DModel config keys (as in a diffusers config.json, None values "
        "left out) except sample_size, in/out channels and num_class_embeds, which the data "
        "sets.")

    @field_validator("unet")
    @classmethod
    def _known_keys(cls, unet: dict[str, Any]) -> dict[str, Any]:
        unet = {k: v for k, v in unet.items() if v is not None and not k.startswith("_")}
        taken = sorted(set(unet) & set(FROM_DATA))
        if taken:
            raise ValueError(f"{', '.join(taken)} come from the data; leave them out")
        try:
            known = unet_keys()
        except ImportError:
            return unet  # refused with the pip command by check_recipe
        unknown = sorted(set(unet) - known)
        if unknown:
            raise ValueError(f"not UNet2DModel arguments: {', '.join(unknown)}")
        return unet

    unet_none: tuple[str, ...] = Field(
        (), description="UNet2DModel arguments set to None (TOML has no null), e.g. "
        "attention_head_dim in older diffusers configs (one head per block).")
    timestep_offset: int = Field(
        0, ge=-1000, le=1000, description="Added to the time value the network sees: -1 for "
        "weights trained by diffusers (its timestep k is corediff's step k + 1).")

    @model_validator(mode="after")
    def _check_none(self) -> DiffusersUNet2DConfig:
        both = sorted(set(self.unet_none) & set(self.unet))
        if both:
            raise ValueError(f"unet_none and unet both set {', '.join(both)}")
        taken = sorted(set(self.unet_none) & set(FROM_DATA))
        if taken:
            raise ValueError(f"{', '.join(taken)} come from the data; leave them out")
        try:
            unknown = sorted(set(self.unet_none) - unet_keys())
        except ImportError:
            return self
        if unknown:
            raise ValueError(f"not UNet2DModel arguments: {', '.join(unknown)}")
        return self


class DiffusersUNet2D(Model):
    """A wrapped ``diffusers.UNet2DModel``; ``forward(x, t, y)`` returns its ``.sample``."""

    Config = DiffusersUNet2DConfig

    @classmethod
    def check_recipe(cls, config: ComponentConfig,
                     others: Mapping[str, tuple[type, ComponentConfig]]) -> list[str]:
        try:
            unet_keys()
        except ImportError:
            return ["needs diffusers, which is not installed: pip install 'diffusers>=0.27'"]
        return []

    @classmethod
    def check_data_spec(cls, config: ComponentConfig, spec: DataSpec) -> list[str]:
        levels = len(config.unet.get("block_out_channels", SMALL["block_out_channels"]))
        factor = 2 ** (levels - 1)
        if spec.image_size % factor:
            return [f"image_size {spec.image_size} is not divisible by {factor} ({levels} "
                    "levels)"]
        return []

    def __init__(self, config: ComponentConfig | None = None, *, in_channels: int,
                 out_channels: int, image_size: int, num_classes: int | None = None) -> None:
        super().__init__(config, in_channels=in_channels, out_channels=out_channels,
                         image_size=image_size, num_classes=num_classes)
        from diffusers import UNet2DModel

        self.net = UNet2DModel(
            **self.config.unet, **dict.fromkeys(self.config.unet_none), sample_size=image_size,
            in_channels=in_channels, out_channels=out_channels,
            num_class_embeds=None if num_classes is None else num_classes + 1,
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes is not None and y is None:
            y = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
        if self.config.timestep_offset:
            t = t + self.config.timestep_offset
        return self.net(x, t, class_labels=y if self.num_classes is not None else None).sample
