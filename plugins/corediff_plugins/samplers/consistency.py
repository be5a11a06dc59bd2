"""Multistep consistency sampling: Song et al. 2023, "Consistency Models", Algorithm 1.
x ← f(x_T, T); then for each re-noising level τ_n (descending): z ~ N(0, I),
x_τn = x + sqrt(τ_n² − σ_min²)·z, x ← f(x_τn, τ_n). One network evaluation per level: one
step is a single call. f is the parameterization's x̂0 (the ``consistency`` one for a
consistency model; any σ-time denoiser runs too). The levels are ``sigmas`` as given, or the
``steps − 1`` inner levels of the Karras grid of steps + 1 levels (CM eq. 5). Matches a
float64 transcription of Algorithm 1 on the same noise (tests/test_few_step.py) to 1e-12."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Denoise, Sampler, Step
from corediff.maths.gaussian import karras_sigmas
from corediff.maths.noise import randn


class ConsistencySamplerConfig(ComponentConfig):
    type: Literal["consistency"] = "consistency"
    steps: StepCount = Field(1, description="Network evaluations: 1 + the re-noising levels.")
    sigmas: tuple[PositiveFloat, ...] | None = Field(
        None, description="The re-noising levels τ_1 > τ_2 > …, steps − 1 of them (None: the "
        "inner levels of the Karras grid of steps + 1 levels).")
    rho: PositiveFloat = Field(7.0, description="ρ of that Karras grid.")

    @model_validator(mode="after")
    def _check_sigmas(self) -> ConsistencySamplerConfig:
        if self.sigmas is None:
            return self
        if len(self.sigmas) != self.steps - 1:
            raise ValueError(f"sigmas has {len(self.sigmas)} levels; steps = {self.steps} "
                             f"needs {self.steps - 1}")
        if list(self.sigmas) != sorted(set(self.sigmas), reverse=True):
            raise ValueError("sigmas must be strictly decreasing")
        return self


class ConsistencySampler(Sampler):
    """Algorithm 1: evaluate f at σ_max, then re-noise to each τ_n and evaluate again."""

    Config = ConsistencySamplerConfig
    requires = {"degradation": frozenset({"sigma_time"})}
    stochastic = True

    def _sigma_min(self) -> float:
        return float(self.degradation.schedule.config.sigma_min)  # type: ignore[attr-defined]

    def timesteps(self, start: int | float | None = None) -> list[float]:
        cfg, sigma_max = self.config, float(self.degradation.t_max)
        start = sigma_max if start is None else float(start)
        levels = cfg.sigmas
        if levels is None:
            levels = karras_sigmas(cfg.steps + 1, self._sigma_min(), sigma_max, cfg.rho)
            levels = levels[1:-1].tolist()
        return [start] + [s for s in levels if s < start]

    def plan(self, steps: list[float]) -> list[float]:
        """Per step, the re-noising scale sqrt(τ_next² − σ_min²) (0 after the last)."""
        sigma_min = self._sigma_min()
        return [math.sqrt(max(t**2 - sigma_min**2, 0.0)) for t in steps[1:]] + [0.0]

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        x0 = denoise(x, step.t).x0
        if step.is_last:
            return x0, x0
        return x0 + step.plan * randn(x.shape, step.generator, x.device, x.dtype), x0
