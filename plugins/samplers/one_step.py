"""One-step sampling: x̂0 from a single network call at the start step, Bansal et al. 2022,
"Cold Diffusion", Sec. 3 ("direct reconstruction", the naive one-shot baseline); works for any
degradation and parameterization."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import DenoiseFn, Sampler, SampleResult, TrajectoryStep


class OneStepSamplerConfig(ComponentConfig):
    type: Literal["one_step"] = "one_step"
    clip_x0: bool = Field(False, description="Clamp x̂0 to [-1, 1].")


class OneStepSampler(Sampler):
    """sample = x̂0(x, start): one network call."""

    Config = OneStepSamplerConfig

    def timesteps(self, start: int | None = None) -> list[int]:
        return [self.degradation.steps if start is None else start]

    @torch.no_grad()
    def sample(
        self,
        model: DenoiseFn,
        x: Tensor,
        *,
        start: int | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
    ) -> SampleResult:
        step = self.timesteps(start)[0]
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        x0 = self.parameterization.predict(model(x, t), x, t).x0
        if self.config.clip_x0:
            x0 = x0.clamp(-1, 1)
        path = [TrajectoryStep(step, x, x0)] if trajectory else []
        return SampleResult(sample=x0, direct=x0, trajectory=path)
