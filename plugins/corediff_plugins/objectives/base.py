"""Bases shared by the first-party few-step objectives."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from corediff.interfaces import Objective


class SteppedObjective(Objective):
    """An objective whose maths depends on the optimizer step k (a curriculum, a round, the
    start from a teacher): k follows :meth:`after_step` and is saved with the objective's
    modules in ``extra_state`` (key ``"k"``), so a resumed run continues where it stopped."""

    k: int = 0
    _grid: tuple[Hashable, Any] | None = None

    def grid_for(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` (the time grid a loss indexes, on the device) made again only when
        ``key`` changes (the curriculum's level count, the round, the device), so a training
        step builds no tensor from Python data and copies nothing to the device."""
        if self._grid is None or self._grid[0] != key:
            self._grid = (key, build())
        return self._grid[1]

    def after_step(self, model: nn.Module, step: int) -> None:
        self.k = step

    def extra_state(self) -> dict[str, Tensor]:
        return {**super().extra_state(), "k": torch.tensor(self.k)}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        super().load_extra_state({key: v for key, v in state.items() if key != "k"})
        self.k = int(state["k"])
