"""Classifier-free guidance: Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6,
applied to the network output (ε, v or x0 alike):

    guided = m(x_t, t, ∅) + s · (m(x_t, t, y) − m(x_t, t, ∅))

s = 1 is the conditional model (no extra evaluation), s = 0 the unconditional one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Guidance, Prediction


class ClassifierFreeGuidanceConfig(ComponentConfig):
    type: Literal["cfg"] = "cfg"
    scale: float = Field(1.0, ge=0, description="Guidance scale s (1: the conditional model).")


class ClassifierFreeGuidance(Guidance):
    """Extrapolates from the unconditional towards the conditional output by s."""

    Config = ClassifierFreeGuidanceConfig
    #: Checked by corediff.testing (GUIDANCE_INVARIANTS).
    invariants = {"conditional": {"scale": 1.0}, "unconditional": {"scale": 0.0}, "cfg": {}}

    def active(self, t: int) -> bool:
        return self.config.scale != 1.0

    def guided_output(self, cond: Tensor, uncond: Tensor) -> Tensor:
        """m(∅) + s·(m(y) − m(∅))."""
        return uncond + self.config.scale * (cond - uncond)

    def combine(self, cond: Tensor, uncond: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return self.parameterization.predict(self.guided_output(cond, uncond), x_t, t)
