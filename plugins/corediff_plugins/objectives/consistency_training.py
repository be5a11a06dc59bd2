"""Improved consistency training (iCT): Song & Dhariwal 2023, "Improved Techniques for
Training Consistency Models", §3 and Algorithm 1 of Song et al. 2023 (CT) with its changes.

At training step k the Karras grid σ_1 < … < σ_N has N = N(k) = min(s0·2^⌊k/K'⌋, s1) + 1
levels (eq. 12, K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋); i is drawn with the lognormal mass between
σ_i and σ_{i+1} (eq. 13, P_mean = −1.1, P_std = 2); with one ε ~ N(0, I),

    loss = λ(σ_i) · d(f_θ(x0 + σ_{i+1}·ε, σ_{i+1}), f_θ⁻(x0 + σ_i·ε, σ_i)),
    λ(σ_i) = 1/(σ_{i+1} − σ_i),   d = pseudo-Huber with c = 0.00054·sqrt(dim) (eq. 11),

where θ⁻ = stopgrad(θ): the same network, no EMA teacher (§3.2). f is the ``consistency``
parameterization (the boundary scalings of CM App. C) on the ``edm`` degradation; σ_min,
σ_max and ρ are the schedule's. Matches a float64 transcription of these equations
(tests/test_few_step.py) to 1e-10 relative on fixed levels and noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import Tensor

from corediff.config import ComponentConfig, ObjectiveConfig
from corediff.interfaces import ObjectiveBatch, ObjectiveLosses
from corediff.maths.consistency import (
    discretisation_steps,
    lognormal_level_probs,
    pseudo_huber,
    pseudo_huber_c,
    training_sigmas,
)
from corediff.maths.noise import multinomial
from corediff_plugins.objectives.base import SteppedObjective


class ConsistencyTrainingConfig(ObjectiveConfig):
    type: Literal["consistency_training"] = "consistency_training"
    curriculum_steps: PositiveInt = Field(
        400_000, description="K, the training steps the curriculum N(k) spans: set it to "
        "train.steps (iCT, CIFAR-10: 400 000).")
    s0: PositiveInt = Field(10, description="s0, the initial discretisation steps.")
    s1: PositiveInt = Field(1280, description="s1, the final discretisation steps.")
    p_mean: float = Field(-1.1, description="P_mean of the lognormal level distribution.")
    p_std: PositiveFloat = Field(2.0, description="P_std of the lognormal level distribution.")
    huber_c: PositiveFloat | None = Field(
        None, description="c of the pseudo-Huber distance (None: 0.00054·sqrt(dimension)).")


def check_consistency_recipe(
    config: ComponentConfig, others: Mapping[str, tuple[type, ComponentConfig]]
) -> list[str]:
    """Refusals shared by the consistency objectives: an ``edm`` schedule, the ``consistency``
    parameterization with the schedule's σ_min."""
    schedule = others["schedule"][1]
    param = others["parameterization"][1]
    if schedule.type != "edm":
        return [f"needs the 'edm' schedule (σ levels), not '{schedule.type}'"]
    if param.type != "consistency":
        return ["needs [diffusion.parameterization] type = \"consistency\" (the boundary "
                f"condition f(x, σ_min) = x), not '{param.type}'"]
    if param.sigma_min != schedule.sigma_min:
        return [f"parameterization sigma_min {param.sigma_min} must equal the schedule's "
                f"sigma_min {schedule.sigma_min}"]
    return []


class ConsistencyTrainingObjective(SteppedObjective):
    """iCT's loss on one batch; the curriculum position k is objective state."""

    Config = ConsistencyTrainingConfig
    requires = {"degradation": frozenset({"sigma_time"})}

    @classmethod
    def check_recipe(cls, config, others):  # type: ignore[no-untyped-def]
        return super().check_recipe(config, others) or check_consistency_recipe(config, others)

    def levels(self) -> int:
        """N(k) at the current training step k."""
        cfg = self.config
        return discretisation_steps(self.k, cfg.curriculum_steps, cfg.s0, cfg.s1)

    def sigmas(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """σ_1 < … < σ_N(k) (float64) and the lognormal probabilities of the N(k) − 1
        intervals, on ``device``; made again only when N(k) changes."""
        def build() -> tuple[Tensor, Tensor]:
            schedule, cfg = self.degradation.schedule.config, self.config
            sigmas = training_sigmas(self.levels(), schedule.sigma_min, schedule.sigma_max,
                                     schedule.rho)
            probs = lognormal_level_probs(sigmas, cfg.p_mean, cfg.p_std)
            return sigmas.to(device), probs.to(device)
        return self.grid_for((self.levels(), device), build)

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        x0, g = batch.x0, batch.generator
        sigmas, probs = self.sigmas(x0.device)
        i = multinomial(probs, x0.shape[0], g, x0.device)
        noise = self.degradation.sample_noise(x0, generator=g)
        per_sample = self.loss_at(batch, sigmas[i], sigmas[i + 1], noise)
        levels = torch.full((), float(len(sigmas)), device=x0.device)
        return ObjectiveLosses(per_sample, {"levels": levels})

    def loss_at(self, batch: ObjectiveBatch, sigma: Tensor, sigma_next: Tensor,
                noise: Tensor) -> Tensor:
        """λ(σ_i)·d(f_θ(x0 + σ_{i+1}ε, σ_{i+1}), stopgrad f_θ(x0 + σ_iε, σ_i)) per sample, at
        given levels σ_i < σ_{i+1} [B] (float64) and noise ε."""
        param, y = self.parameterization, batch.drop_labels()
        x_next, x_cur = batch.degrade(sigma_next, noise), batch.degrade(sigma, noise)
        student = param.predict(batch.net(*param.condition(x_next, sigma_next), y),
                                x_next, sigma_next).x0
        with torch.no_grad():
            target = param.predict(batch.net(*param.condition(x_cur, sigma), y), x_cur, sigma).x0
        c = self.config.huber_c or pseudo_huber_c(batch.x0[0].numel())
        weight = (sigma_next - sigma).reciprocal().to(student)
        return weight * pseudo_huber(student, target, c)

