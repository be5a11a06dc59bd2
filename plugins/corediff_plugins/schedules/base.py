"""Base shared by the first-party ᾱ schedules (their maths is public in
:mod:`corediff.maths.gaussian`).

A :class:`GaussianSchedule` is defined by its betas β_1..β_T; ``values()`` is ᾱ_0..ᾱ_T
(capability "alpha_bar"), optionally rescaled to zero terminal SNR (Lin et al. 2023).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule
from corediff.maths.gaussian import rescale_zero_terminal_snr


class GaussianScheduleConfig(ComponentConfig):
    """Fields shared by every ᾱ schedule."""

    steps: StepCount = Field(1000, description="T, the number of diffusion steps.")
    rescale_zero_terminal_snr: bool = Field(
        False, description="Shift and scale sqrt(ᾱ) so that ᾱ_T = 0 (Lin et al. 2023, Alg. 1)."
    )


class GaussianSchedule(Schedule):
    """A schedule defined by its betas β_1..β_T; ``values()`` is ᾱ_0..ᾱ_T."""

    provides = frozenset({"alpha_bar"})

    def __init__(self, config: ComponentConfig | None = None) -> None:
        super().__init__(config)
        betas = self.betas()
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"schedule '{self.config.type}' with steps={self.steps} gives β outside (0, 1) "
                f"(max β = {betas.max().item():.4g}); use more steps or smaller β endpoints"
            )

    @abstractmethod
    def betas(self) -> Tensor:
        """float64 tensor [T]: β_1..β_T."""

    def values(self) -> Tensor:
        alpha_bar = torch.cumprod(1.0 - self.betas().double(), dim=0)
        if self.config.rescale_zero_terminal_snr:  # type: ignore[attr-defined]
            alpha_bar = rescale_zero_terminal_snr(alpha_bar)
        return torch.cat([alpha_bar.new_ones(1), alpha_bar])
