"""Bases shared by the first-party few-step objectives."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from corediff.interfaces import Objective


class SteppedObjective(Objective):
    """An objective whose maths depends on the optimizer step k (a curriculum, a round, the
    start from a teacher): k follows :meth:`after_step` and is saved with the objective's
    modules in ``extra_state`` (key ``"k"``), so a resumed run continues where it stopped."""

    k: int = 0

    def after_step(self, model: nn.Module, step: int) -> None:
        self.k = step

    def extra_state(self) -> dict[str, Tensor]:
        return {**super().extra_state(), "k": torch.tensor(self.k)}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        super().load_extra_state({key: v for key, v in state.items() if key != "k"})
        self.k = int(state["k"])
