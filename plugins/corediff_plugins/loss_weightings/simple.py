"""Uniform weighting: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 14
(L_simple: the unweighted regression loss of whatever the network predicts)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from corediff.config import LossWeightingConfig
from corediff.interfaces import LossWeighting


class SimpleWeightingConfig(LossWeightingConfig):
    type: Literal["simple"] = "simple"


class SimpleWeighting(LossWeighting):
    """λ(t) = 1."""

    Config = SimpleWeightingConfig

    def weight(self, t: Tensor) -> Tensor:
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
