"""Progressive distillation: Salimans & Ho 2022, "Progressive Distillation for Fast Sampling
of Diffusion Models", Algorithm 2, on the discrete Gaussian degradation.

A student of N sampling steps learns to take in one DDIM step (η = 0) what its teacher takes
in two. Its steps are the DDIM "trailing" grid of N steps t_1 > … > t_N (t_{N+1} = 0), which
the trailing grid of 2N steps refines with the midpoints t'. For t = t_i ~ U, t'' = t_{i+1}:

    z_t = α_t·x + σ_t·ε;   x̂ = x̂_η(z_t),   z_t' = α_t'·x̂ + (σ_t'/σ_t)·(z_t − α_t·x̂);
    x̂' = x̂_η(z_t'),   z_t'' = α_t''·x̂' + (σ_t''/σ_t')·(z_t' − α_t'·x̂');
    x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t);
    loss = max(SNR_t, 1)·||x̃ − x̂_θ(z_t)||²   ("truncated SNR" weighting, §4),

with α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t) and x̂_θ from v-prediction (§4). Rounds halve N:
round r (``steps_per_round`` optimizer steps) distils N_r = teacher_steps / 2^(r+1); round 0's
teacher is the loaded run, each later round's teacher the student as the previous round left
it (objective state, with the step count, saved and resumed exactly). The student starts as a
copy of the teacher's network (``start_from_teacher``). After ``rounds`` rounds
the student samples with ``ddim`` at teacher_steps / 2^rounds steps, spacing "trailing".
Matches a float64 transcription of Algorithm 2 (tests/test_few_step.py) to 1e-10 relative.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor, nn

from corediff.config import ComponentConfig, ObjectiveConfig
from corediff.errors import ConfigError
from corediff.interfaces import ObjectiveBatch, ObjectiveLosses
from corediff.maths.noise import randint
from corediff.maths.timesteps import time_grid
from corediff_plugins.objectives.base import SteppedObjective
from corediff_plugins.objectives.teaching import (
    StartsFromTeacher,
    checked_teacher,
    teacher_x0,
)


class ProgressiveDistillationConfig(ObjectiveConfig):
    type: Literal["progressive_distillation"] = "progressive_distillation"
    teacher_steps: PositiveInt = Field(
        16, description="N, the teacher's DDIM steps in round 0 (the student's: N/2).")
    rounds: PositiveInt = Field(2, description="Halvings; the student ends at N/2^rounds steps.")
    steps_per_round: PositiveInt = Field(
        200, description="Optimizer steps per round (train.steps = rounds × this).")
    start_from_teacher: bool = Field(
        True, description="The student starts as a copy of the teacher's network (§3).")

    @model_validator(mode="after")
    def _check_halving(self) -> ProgressiveDistillationConfig:
        if self.teacher_steps % 2**self.rounds:
            raise ValueError(f"teacher_steps {self.teacher_steps} cannot be halved "
                             f"{self.rounds} times; use a multiple of {2**self.rounds}")
        return self


def distillation_target(z_t: Tensor, z_t2: Tensor, alpha_t: Tensor, sigma_t: Tensor,
                        alpha_t2: Tensor, sigma_t2: Tensor) -> Tensor:
    """x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t): the x̂ whose one DDIM step
    from z_t lands on the teacher's z_t'' (Algorithm 2; coefficients broadcast to z)."""
    ratio = sigma_t2 / sigma_t
    return (z_t2 - ratio * z_t) / (alpha_t2 - ratio * alpha_t)


def ddim_step(z: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor, alpha_s: Tensor,
              sigma_s: Tensor) -> Tensor:
    """z_s = α_s·x̂ + (σ_s/σ_t)·(z_t − α_t·x̂) (DDIM, η = 0)."""
    return alpha_s * x0 + sigma_s / sigma * (z - alpha * x0)


class ProgressiveDistillationObjective(StartsFromTeacher, SteppedObjective):
    """Algorithm 2's loss on one batch; the round's teacher and the step count are state."""

    Config = ProgressiveDistillationConfig
    requires = {"degradation": frozenset({"gaussian"})}
    needs_teacher = True

    def __init__(self, config: ComponentConfig | None = None, *, model: nn.Module,
                 **parts: Any) -> None:
        super().__init__(config, model=model, **parts)
        self.model = model
        self.round_teacher = copy.deepcopy(model).requires_grad_(False)

    @classmethod
    def check_recipe(cls, config, others):  # type: ignore[no-untyped-def]
        refused = super().check_recipe(config, others)
        param = others["parameterization"][1].type
        steps = getattr(others["schedule"][1], "steps", None)  # None: a schedule of given ᾱ
        if param != "v":
            refused.append(f"needs [diffusion.parameterization] type = \"v\" (Salimans & Ho "
                           f"§4), not '{param}'")
        if steps is not None and config.teacher_steps > steps:
            refused.append(f"teacher_steps = {config.teacher_steps} exceeds the schedule's "
                           f"steps = {steps}")
        return refused

    def modules(self) -> dict[str, nn.Module]:
        return {"round_teacher": self.round_teacher}

    def round(self) -> int:
        return min(self.k // self.config.steps_per_round, self.config.rounds - 1)

    def student_steps(self) -> int:
        """N_r = teacher_steps / 2^(r+1), the steps the student learns in this round."""
        return self.config.teacher_steps // 2 ** (self.round() + 1)

    def grid(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(t, t', t'') [N_r] of the student's steps: trailing grids of N_r and 2·N_r steps;
        made again only when the round (N_r) changes."""
        def build() -> tuple[Tensor, Tensor, Tensor]:
            fine = time_grid(self.degradation.steps, 2 * self.student_steps(), "trailing")
            steps = torch.tensor([*fine, 0], device=device)
            return steps[0:-1:2], steps[1::2], steps[2::2]
        return self.grid_for((self.student_steps(), device), build)

    def teacher_prediction(self, z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """x̂_η(z_t): the loaded teacher in round 0, the previous round's student after."""
        if self.round() == 0:
            teacher = checked_teacher(self, "gaussian", "DDIM steps")
            if not torch.equal(teacher.degradation.schedule.values(),
                               self.degradation.schedule.values()):
                raise ConfigError(f"[diffusion.objective] teacher = '{self.config.teacher}' "
                                  "has another noise schedule (ᾱ_t) than the student's")
            return teacher_x0(teacher, z, t, y)
        param = self.parameterization
        with torch.no_grad():
            return param.predict(self.round_teacher(*param.condition(z, t), y), z, t).x0

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        x0, g = batch.x0, batch.generator
        t, mid, t2 = self.grid(x0.device)
        i = randint(0, len(t), (x0.shape[0],), g, x0.device)
        noise = self.degradation.sample_noise(x0, generator=g)
        logs = {"round": torch.full((), float(self.round()), device=x0.device)}
        return ObjectiveLosses(self.loss_at(batch, t[i], mid[i], t2[i], noise), logs)

    def loss_at(self, batch: ObjectiveBatch, t: Tensor, mid: Tensor, t2: Tensor,
                noise: Tensor) -> Tensor:
        """max(SNR_t, 1)·mean((x̃ − x̂_θ(z_t))²) per sample at steps t > t' > t'' [B]."""
        param, y = self.parameterization, batch.drop_labels()
        alpha_bar = self.degradation.schedule.values().to(noise.device)
        shape = (-1, *[1] * (noise.ndim - 1))

        def alpha_sigma(steps: Tensor) -> tuple[Tensor, Tensor]:
            a = alpha_bar[steps].view(shape)
            return a.sqrt().to(noise), (1 - a).sqrt().to(noise)

        (a_t, s_t), (a_mid, s_mid), (a_t2, s_t2) = map(alpha_sigma, (t, mid, t2))
        z_t = batch.degrade(t, noise)
        with torch.no_grad():
            x_hat = self.teacher_prediction(z_t, t, y)
            z_mid = ddim_step(z_t, x_hat, a_t, s_t, a_mid, s_mid)
            x_hat = self.teacher_prediction(z_mid, mid, y)
            z_t2 = ddim_step(z_mid, x_hat, a_mid, s_mid, a_t2, s_t2)
            target = distillation_target(z_t, z_t2, a_t, s_t, a_t2, s_t2)
        student = param.predict(batch.net(*param.condition(z_t, t), y), z_t, t).x0
        snr = (alpha_bar[t] / (1 - alpha_bar[t])).clamp_min(1).to(student)
        return snr * (target.to(student) - student).square().flatten(1).mean(1)

    def after_step(self, model: nn.Module, step: int) -> None:
        """At the end of a round (not the last), the student becomes the next teacher."""
        super().after_step(model, step)
        if step % self.config.steps_per_round == 0 and step < self.config.rounds * \
                self.config.steps_per_round:
            self.round_teacher.load_state_dict(model.state_dict())
