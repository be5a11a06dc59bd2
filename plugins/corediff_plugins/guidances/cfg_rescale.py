"""Guidance rescale: Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", §3.4, eq. 15-16. Large guidance scales over-expose; the guided output is rescaled to
the conditional output's standard deviation (per sample), then blended by φ:

    x_cfg = m(∅) + s·(m(y) − m(∅))
    x_rescaled = x_cfg · std(m(y)) / std(x_cfg)
    guided = φ·x_rescaled + (1 − φ)·x_cfg

applied to the network output, as diffusers' ``rescale_noise_cfg`` (a constant guided output,
std 0, is left as is).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.interfaces import Prediction
from corediff_plugins.guidances.cfg import ClassifierFreeGuidance, ClassifierFreeGuidanceConfig


class RescaledGuidanceConfig(ClassifierFreeGuidanceConfig):
    type: Literal["cfg_rescale"] = "cfg_rescale"  # type: ignore[assignment]
    phi: float = Field(0.7, ge=0, le=1, description="φ: weight of the rescaled output (0: CFG).")


class RescaledGuidance(ClassifierFreeGuidance):
    """CFG with the guided output's std pulled back to the conditional output's."""

    Config = RescaledGuidanceConfig
    invariants = {"conditional": {"scale": 1.0}, "cfg": {"phi": 0.0}}

    def combine(self, cond: Tensor, uncond: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        guided = self.guided_output(cond, uncond)
        dims = tuple(range(1, cond.ndim))
        spread = guided.std(dim=dims, keepdim=True)
        ratio = torch.where(spread > 0, cond.std(dim=dims, keepdim=True) / spread, 1.0)
        phi = self.config.phi
        return self.parameterization.predict(phi * guided * ratio + (1 - phi) * guided, x_t, t)
