"""Guidance in a limited interval: Kynkäänniemi et al. 2024, "Applying Guidance in a Limited
Interval Improves Sample and Distribution Quality in Diffusion Models", §3: classifier-free
guidance only at the middle noise levels, the conditional model elsewhere.

The interval is given in fractions of T: guidance applies at steps t with
low·T < t ≤ high·T (the paper's σ interval maps to steps through the schedule). Outside it
the network runs once, on the conditional input only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from corediff_plugins.guidances.cfg import ClassifierFreeGuidance, ClassifierFreeGuidanceConfig


class IntervalGuidanceConfig(ClassifierFreeGuidanceConfig):
    type: Literal["cfg_interval"] = "cfg_interval"  # type: ignore[assignment]
    low: float = Field(0.0, ge=0, le=1, description="Guide only above this fraction of T.")
    high: float = Field(1.0, ge=0, le=1, description="Guide only at or below this fraction of T.")

    @model_validator(mode="after")
    def _check_interval(self) -> IntervalGuidanceConfig:
        if self.low >= self.high:
            raise ValueError(f"low = {self.low} must be below high = {self.high}")
        return self


class IntervalGuidance(ClassifierFreeGuidance):
    """CFG at low·T < t ≤ high·T, the conditional output elsewhere."""

    Config = IntervalGuidanceConfig

    def active(self, t: int) -> bool:
        steps = self.degradation.steps
        inside = self.config.low * steps < t <= self.config.high * steps
        return inside and super().active(t)
