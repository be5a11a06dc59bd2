"""An explicit β schedule: β_1..β_T given as a list, as diffusers' ``trained_betas`` (e.g. a
schedule fitted or tuned outside any formula); ᾱ_t = Π_{s≤t}(1 − β_s) (Ho et al. 2020,
"Denoising Diffusion Probabilistic Models", eq. 4), optionally rescaled to zero terminal SNR
(Lin et al. 2023, Algorithm 1). T is the length of the list. ``corediff import diffusers``
writes this schedule for a scheduler config holding ``trained_betas`` or a ``beta_schedule``
corediff has no named plugin for (computed by diffusers' own scheduler class)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.limits import MAX_STEPS
from corediff.maths.gaussian import linear_betas
from corediff_plugins.schedules.base import GaussianSchedule

Beta = Annotated[float, Field(gt=0, lt=1)]


def _ddpm_betas() -> tuple[float, ...]:
    """DDPM's linear β (1e-4 .. 0.02 over T = 1000): the default list."""
    return tuple(linear_betas(1e-4, 0.02, 1000, sqrt_space=False).tolist())


class BetasScheduleConfig(ComponentConfig):
    type: Literal["betas"] = "betas"
    betas: tuple[Beta, ...] = Field(
        default_factory=_ddpm_betas, min_length=1, max_length=MAX_STEPS,
        description="β_1..β_T, each in (0, 1); T = their number (default: DDPM's linear "
        "1e-4 .. 0.02 over 1000 steps).")
    rescale_zero_terminal_snr: bool = Field(
        False, description="Shift and scale sqrt(ᾱ) so that ᾱ_T = 0 (Lin et al. 2023, Alg. 1)."
    )


class BetasSchedule(GaussianSchedule):
    """ᾱ from the given β list."""

    Config = BetasScheduleConfig

    @property
    def steps(self) -> int:
        return len(self.config.betas)

    def betas(self) -> Tensor:
        return torch.tensor(self.config.betas, dtype=torch.float64)
