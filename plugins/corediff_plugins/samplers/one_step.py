"""One-step sampling: x̂0 from a single network call at the start step, Bansal et al. 2022,
"Cold Diffusion", Sec. 3 ("direct reconstruction", the naive one-shot baseline); works for any
degradation and parameterization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Denoise, Sampler, Step


class OneStepSamplerConfig(ComponentConfig):
    type: Literal["one_step"] = "one_step"
    clip_x0: bool = Field(False, description="Clamp x̂0 to [-1, 1].")


class OneStepSampler(Sampler):
    """sample = x̂0(x, start): one network call."""

    Config = OneStepSamplerConfig

    def timesteps(self, start: int | float | None = None) -> list[int] | list[float]:
        return [self.degradation.t_max if start is None else start]

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        x0 = denoise(x, step.t).x0
        if self.config.clip_x0:
            x0 = x0.clamp(-1, 1)
        return x0, x0
