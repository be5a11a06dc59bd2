"""No guidance: the sampler sees the conditional prediction alone (the class-conditional
model at its labels, or the unconditional model when there are none)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Guidance, Prediction


class NoGuidanceConfig(ComponentConfig):
    type: Literal["none"] = "none"


class NoGuidance(Guidance):
    """Never asks for the unconditional output."""

    Config = NoGuidanceConfig
    invariants = {"conditional": {}}

    def active(self, t: int) -> bool:
        return False

    def combine(self, cond: Tensor, uncond: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return self.parameterization.predict(cond, x_t, t)
