"""Pixelation as a cold degradation (Bansal et al. 2022, "Cold Diffusion", §4: super-resolution).

D(x0, t) averages x0 over square blocks of side b(t) = 1 + round((max_block − 1) · t / T) and
repeats each block mean over its pixels; b(0) = 1 leaves x0 unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation


class PixelateConfig(ComponentConfig):
    type: Literal["pixelate"] = "pixelate"
    max_block: int = Field(8, ge=1, description="Block side at the last step T.")


class PixelateDegradation(Degradation):
    """Block-average pixelation whose block grows linearly with t."""

    Config = PixelateConfig
    provides = frozenset({"deterministic"})

    def block_size(self, t: Tensor) -> Tensor:
        fraction = t.double() / self.steps
        return (1 + torch.round((self.config.max_block - 1) * fraction)).long()

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        blocks = self.block_size(t.to(x0.device))
        out = x0.clone()
        for block in torch.unique(blocks).tolist():  # one pass per distinct block size
            if block == 1:
                continue
            rows = blocks == block
            pooled = F.avg_pool2d(x0[rows], block, ceil_mode=True, count_include_pad=False)
            out[rows] = F.interpolate(pooled, scale_factor=block, mode="nearest")[
                ..., : x0.shape[-2], : x0.shape[-1]
            ]
        return out
