"""Partial-degradation prior (Bansal et al. 2022, "Cold Diffusion", §5: generation from a
degraded state; the SVD notes start at 70 % of T from degraded training images).

``fit(images)`` keeps a bank of at most ``bank_size`` training images; ``sample`` draws images
from it and returns D(x, start_step()) + noise_std · ε, with start_step() = round(start · T)
(start · t_max for continuous times). The bank is saved by ``extra_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Prior, steps_like
from corediff.maths.noise import randint, randn
from corediff.maths.timesteps import time_at


class PartialPriorConfig(ComponentConfig):
    type: Literal["partial"] = "partial"
    start: float = Field(0.7, gt=0, le=1, description="Starting step as a fraction of T.")
    bank_size: PositiveInt = Field(1024, description="Training images kept by fit().")
    noise_std: NonNegativeFloat = Field(0.0, description="Std of noise added to the start.")


class PartialPrior(Prior):
    Config = PartialPriorConfig

    def __init__(
        self, config: PartialPriorConfig | None = None, *, degradation: Degradation
    ) -> None:
        super().__init__(config, degradation=degradation)
        self.bank: Tensor | None = None

    def start_step(self) -> int | float:
        return time_at(self.config.start, self.degradation.t_max)

    def fit(self, images: Tensor) -> None:
        self.bank = images[: self.config.bank_size].detach().float().cpu().clone()

    def extra_state(self) -> dict[str, Tensor]:
        return {} if self.bank is None else {"bank": self.bank}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if "bank" in state:
            self.bank = state["bank"].float().cpu()

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        if self.bank is None:
            raise RuntimeError("partial prior is not fitted: call fit(images) first")
        if tuple(shape[1:]) != tuple(self.bank.shape[1:]):
            raise ValueError(f"prior bank holds {tuple(self.bank.shape[1:])} images, not {shape}")
        index = randint(0, len(self.bank), (shape[0],), generator, "cpu")
        x0 = self.bank[index].to(device)
        t = steps_like(self.start_step(), x0)
        noise = self.degradation.sample_noise(x0, generator)
        x = self.degradation.degrade(x0, t, noise)
        if self.config.noise_std > 0:
            x = x + self.config.noise_std * randn(shape, generator, device)
        return x
