"""What the loss weightings share (public: a third-party weighting may use it too): the
element-wise loss type and :func:`x0_ratio`, which turns a weight defined on the x0 MSE into
the weight on any parameterization's own loss."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig


class LossWeightingConfig(ComponentConfig):
    """Field shared by the loss weightings."""

    loss_type: Literal["l2", "l1"] = Field("l2", description="Element-wise loss.")


def x0_ratio(weight_x0: Tensor, scale: Tensor) -> Tensor:
    """weight_x0 / s(t): the weight on a parameterization's loss that equals weight_x0 on the
    x0 MSE. 0/0 and ∞/∞ (only at snr ∈ {0, ∞}) take the limit 1 of the snr ratios used here."""
    ratio = weight_x0 / scale
    return torch.where(ratio.isnan(), torch.ones_like(ratio), ratio)
