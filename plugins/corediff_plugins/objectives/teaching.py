"""What the distillation objectives share: the frozen teacher (a loaded run, see
:class:`corediff.interfaces.Objective`), checked for what the method needs, and its x̂0 at
per-sample times (its own parameterization; conditional on the labels when the teacher
was trained with classes, unguided)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from corediff.errors import ConfigError


def checked_teacher(objective: Any, capability: str, what: str) -> Any:
    """The objective's teacher pipeline, refused in one sentence unless its degradation
    provides ``capability`` (``what`` says why it is needed)."""
    teacher = objective.teacher
    name = objective.config.type
    if teacher is None:
        raise ConfigError(f"[diffusion.objective] '{name}' has no teacher loaded: set teacher = "
                          "\"runs/<a trained run>\"")
    if capability not in teacher.degradation.provides:
        raise ConfigError(f"[diffusion.objective] teacher = '{objective.config.teacher}' has the "
                          f"'{teacher.degradation.config.type}' degradation; '{name}' needs "
                          f"{what} (a degradation providing '{capability}')")
    return teacher


@torch.no_grad()
def teacher_x0(teacher: Any, x: Tensor, t: Tensor, y: Tensor | None, network: Any = None) -> Tensor:
    """x̂0 of ``network`` (default: the teacher's EMA network) at x, per-sample times t [B]."""
    param = teacher.parameterization
    network = teacher.model if network is None else network
    labels = y if teacher.data_spec.num_classes is not None else None
    return param.predict(network(*param.condition(x, t), labels), x, t).x0


class StartsFromTeacher:
    """Mixin of the distillation objectives whose student starts as a copy of its teacher's
    network (Salimans & Ho 2022, §3; Song et al. 2023, App. C: CD initialises θ and θ⁻ from
    the teacher). The copy is made when the engine sets :attr:`teacher` — before it creates
    the EMA of the weights and the optimizer — and only in a fresh run (:meth:`fresh`); a
    resumed run's weights then come from its checkpoint. The subclass keeps the trained
    network as ``self.model`` and lists in :meth:`copies` the networks that start as well."""

    model: Any
    config: Any
    _teacher: Any = None

    def fresh(self) -> bool:
        """Whether no optimizer step has been taken (nor state loaded)."""
        return getattr(self, "k", 0) == 0

    def copies(self) -> list[Any]:
        return [self.model]

    @property
    def teacher(self) -> Any:
        return self._teacher

    @teacher.setter
    def teacher(self, pipeline: Any) -> None:
        self._teacher = pipeline
        if pipeline is None or not self.config.start_from_teacher or not self.fresh():
            return
        for network in self.copies():
            try:
                network.load_state_dict(pipeline.model.state_dict())
            except RuntimeError:
                raise ConfigError(
                    f"[diffusion.objective] start_from_teacher: the teacher "
                    f"'{self.config.teacher}' has another network than the [model] section "
                    "describes; use the teacher's [model] or start_from_teacher = false"
                ) from None
