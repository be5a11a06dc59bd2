"""Error-balanced rank schedule for SVD cold diffusion (Bansal et al. 2022, "Cold Diffusion",
§3; the rank k(t) is chosen from the measured error curve of rank truncation).

``fit(images)`` measures the relative error r(k) = E|x − D_k(x)| / E|x| on training images
(k = 0 .. K, K = min(H, W)); values()[t] = f(t) = k_t / K with k_t the smallest rank whose
relative error is at most t / T, so the expected error grows evenly in t (f(0) = 1, f(T) = 0).
The curve is saved by ``extra_state``; using the schedule unfitted is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Schedule
from corediff.maths.cold import svd_error_curve


class RankEnergyConfig(ComponentConfig):
    type: Literal["rank_energy"] = "rank_energy"
    steps: StepCount = Field(64, description="T, the number of degradation steps.")
    fit_images: PositiveInt = Field(256, description="Training images used by fit().")


class RankEnergySchedule(Schedule):
    Config = RankEnergyConfig
    provides = frozenset({"rank"})

    def __init__(self, config: RankEnergyConfig | None = None) -> None:
        super().__init__(config)
        self.error_curve: Tensor | None = None

    def fit(self, images: Tensor) -> None:
        self.error_curve = svd_error_curve(images[: self.config.fit_images]).cpu()

    def extra_state(self) -> dict[str, Tensor]:
        return {} if self.error_curve is None else {"error_curve": self.error_curve}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if "error_curve" in state:
            self.error_curve = state["error_curve"].double().cpu()

    def values(self) -> Tensor:
        if self.error_curve is None:
            raise RuntimeError(
                "rank_energy schedule is not fitted: call fit(images) on training images "
                "(or load_extra_state from a checkpoint) before using it"
            )
        relative = (self.error_curve / self.error_curve[0]).cummin(0).values
        full_rank = relative.shape[0] - 1
        target = torch.arange(self.steps + 1, dtype=torch.float64) / self.steps
        k = (relative[None, :] > target[:, None]).sum(1).clamp(max=full_rank)
        k[0] = full_rank
        return k.double() / full_rank
