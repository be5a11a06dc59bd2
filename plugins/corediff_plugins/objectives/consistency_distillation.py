"""Consistency distillation (CD): Song et al. 2023, "Consistency Models", Algorithm 2.

On the Karras grid σ_1 < … < σ_N (eq. 5, N = 18 as for CIFAR-10), n ~ U{1..N − 1},
x_{n+1} = x0 + σ_{n+1}·z, one step of the teacher's probability-flow ODE dx/dσ = (x − D_φ(x; σ))/σ
from σ_{n+1} to σ_n (Euler, or Heun's 2nd order — EDM Algorithm 1's step) gives x̂_n, and

    loss = λ·d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n)),   λ = 1,
    θ⁻ ← stopgrad(μ·θ⁻ + (1 − μ)·θ) after each optimizer step (the EMA target network).

d is the mean squared error (CM's l2) or iCT's pseudo-Huber. The teacher is a loaded run with
a σ-time degradation (``edm``); the student uses the ``consistency`` parameterization.
θ and θ⁻ start as copies of the teacher's network (``start_from_teacher``); the target
network and the step count are objective state (saved and resumed exactly). Matches a float64
transcription of Algorithm 2 (tests/test_few_step.py) to 1e-10 relative.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, confloat
from torch import Tensor, nn

from corediff.config import ComponentConfig, ObjectiveConfig, StepCount
from corediff.interfaces import ObjectiveBatch, ObjectiveLosses
from corediff.maths.consistency import pseudo_huber, pseudo_huber_c, training_sigmas
from corediff.maths.noise import randint
from corediff_plugins.objectives.base import SteppedObjective
from corediff_plugins.objectives.consistency_training import check_consistency_recipe
from corediff_plugins.objectives.teaching import (
    StartsFromTeacher,
    checked_teacher,
    teacher_x0,
)


class ConsistencyDistillationConfig(ObjectiveConfig):
    type: Literal["consistency_distillation"] = "consistency_distillation"
    steps: StepCount = Field(18, description="N, the levels of the Karras grid (CM: 18).")
    solver: Literal["heun", "euler"] = Field(
        "heun", description="The teacher's ODE step: Heun (EDM Algorithm 1) or Euler.")
    ema_decay: confloat(ge=0, lt=1) = Field(  # type: ignore[valid-type]
        0.95, description="μ of the target network θ⁻ (CM, CIFAR-10: 0.95).")
    distance: Literal["l2", "pseudo_huber"] = Field(
        "l2", description="d: mean squared error, or pseudo-Huber with c = 0.00054·sqrt(dim).")
    start_from_teacher: bool = Field(
        True, description="θ and θ⁻ start as copies of the teacher's network (CM, App. C).")


class ConsistencyDistillationObjective(StartsFromTeacher, SteppedObjective):
    """CD's loss on one batch; the EMA target network is objective state."""

    Config = ConsistencyDistillationConfig
    requires = {"degradation": frozenset({"sigma_time"})}
    needs_teacher = True

    def __init__(self, config: ComponentConfig | None = None, *, model: nn.Module,
                 **parts: Any) -> None:
        super().__init__(config, model=model, **parts)
        self.model = model
        self.target = copy.deepcopy(model).requires_grad_(False)

    @classmethod
    def check_recipe(cls, config, others):  # type: ignore[no-untyped-def]
        return super().check_recipe(config, others) or check_consistency_recipe(config, others)

    def modules(self) -> dict[str, nn.Module]:
        return {"target": self.target}

    def copies(self) -> list[nn.Module]:
        return [self.model, self.target]

    def sigmas(self, device: torch.device) -> Tensor:
        """σ_1 < … < σ_N (float64) on ``device``, made once per device."""
        schedule = self.degradation.schedule.config
        return self.grid_for(device, lambda: training_sigmas(
            self.config.steps, schedule.sigma_min, schedule.sigma_max, schedule.rho).to(device))

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        x0, g = batch.x0, batch.generator
        sigmas = self.sigmas(x0.device)
        n = randint(0, len(sigmas) - 1, (x0.shape[0],), g, x0.device)
        noise = self.degradation.sample_noise(x0, generator=g)
        return ObjectiveLosses(self.loss_at(batch, sigmas[n], sigmas[n + 1], noise))

    def teacher_step(self, x: Tensor, sigma: Tensor, sigma_next: Tensor,
                     y: Tensor | None) -> Tensor:
        """x̂ at σ_n from x at σ_{n+1}: one Euler or Heun step of dx/dσ = (x − D(x; σ))/σ."""
        teacher = checked_teacher(self, "sigma_time", "σ-time ODE steps")
        b = lambda s: s.to(x).view(-1, *[1] * (x.ndim - 1))  # noqa: E731
        d = (x - teacher_x0(teacher, x, sigma_next, y)) / b(sigma_next)
        x_hat = x + b(sigma - sigma_next) * d
        if self.config.solver == "euler":
            return x_hat
        d_hat = (x_hat - teacher_x0(teacher, x_hat, sigma, y)) / b(sigma)
        return x + b(sigma - sigma_next) * 0.5 * (d + d_hat)

    def loss_at(self, batch: ObjectiveBatch, sigma: Tensor, sigma_next: Tensor,
                noise: Tensor) -> Tensor:
        """d(f_θ(x_{n+1}, σ_{n+1}), f_θ⁻(x̂_n, σ_n)) per sample at given σ_n < σ_{n+1} [B]."""
        param, y = self.parameterization, batch.drop_labels()
        x_next = batch.degrade(sigma_next, noise)
        student = param.predict(batch.net(*param.condition(x_next, sigma_next), y),
                                x_next, sigma_next).x0
        with torch.no_grad():
            x_hat = self.teacher_step(x_next, sigma, sigma_next, y)
            target = param.predict(self.target(*param.condition(x_hat, sigma), y), x_hat,
                                   sigma).x0
        if self.config.distance == "l2":
            return (student - target.to(student)).square().flatten(1).mean(1)
        return pseudo_huber(student, target.to(student), pseudo_huber_c(batch.x0[0].numel()))

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """θ⁻ ← μ·θ⁻ + (1 − μ)·θ."""
        super().after_step(model, step)
        mu = self.config.ema_decay
        for target, param in zip(self.target.parameters(), model.parameters(), strict=True):
            target.lerp_(param.detach(), 1 - mu)
        for target, buffer in zip(self.target.buffers(), model.buffers(), strict=True):
            target.copy_(buffer)
