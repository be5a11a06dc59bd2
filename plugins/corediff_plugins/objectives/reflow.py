"""Reflow: Liu et al. 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data
with Rectified Flow", §2.2 (Algorithm 1 with the teacher's coupling).

The teacher (a loaded run, with its own prior, sampler and guidance) maps ``pairs`` draws
ε ~ N(0, I) to samples x = teacher(ε) once; the couples (ε, x) — with the labels they were
generated for — are objective state, saved with every checkpoint of the run and reused on
resume. Training is then flow matching on the couples: (ε, x) drawn uniformly, t from the
recipe's time sampler, x_t = (1 − t)·x + t·ε, and the recipe's parameterization and weighting
on the straight path (for ``velocity``: ||v_θ(x_t, t) − (ε − x)||², Liu et al. eq. 1).
The student needs the ``flow`` degradation and samples with ``flow_euler``. Matches a float64
transcription (tests/test_few_step.py) to 1e-12 relative.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import Tensor

from corediff.config import ObjectiveConfig
from corediff.errors import ConfigError
from corediff.interfaces import Objective, ObjectiveBatch, ObjectiveLosses
from corediff.maths.noise import randint, randn
from corediff_plugins.objectives.teaching import checked_teacher


class ReflowConfig(ObjectiveConfig):
    type: Literal["reflow"] = "reflow"
    pairs: PositiveInt = Field(2048, description="Couples (ε, teacher(ε)) generated once.")
    seed: NonNegativeInt = Field(0, description="Seed of the couples' noise and sampling.")


class ReflowObjective(Objective):
    """Flow matching on the teacher's couples (generated on first use, then state)."""

    Config = ReflowConfig
    requires = {"degradation": frozenset({"flow_path"})}
    needs_teacher = True
    couples: dict[str, Tensor] | None = None

    def generate(self, like: Tensor) -> dict[str, Tensor]:
        """The couples: noise ε [P, C, H, W], the teacher's samples from it, their labels [P]
        (−1: unconditional), all on ``like``'s device; the teacher's own sampler settings."""
        teacher = checked_teacher(self, "stochastic", "a Gaussian prior to map from")
        spec = teacher.data_spec
        if (spec.channels, spec.image_size) != tuple(like.shape[1:3]):
            raise ConfigError(f"[diffusion.objective] teacher = '{self.config.teacher}' makes "
                              f"{spec.channels}×{spec.image_size}² images; the data is "
                              f"{like.shape[1]}×{like.shape[2]}²")
        device, n = next(teacher.model.parameters()).device, self.config.pairs
        g = torch.Generator(device).manual_seed(self.config.seed)
        labels = teacher.labels(n)
        noise = randn((n, spec.channels, spec.image_size, spec.image_size), g, device)
        size, samples = teacher.recipe.sample.batch_size, []
        for first in range(0, n, size):
            y = None if labels is None else labels[first:first + size]
            x_T = noise[first:first + size] * teacher.degradation.prior_std()
            samples.append(teacher.sampler.sample(
                teacher.denoiser(y), x_T, start=teacher.degradation.t_max, generator=g).sample)
        labels = torch.full((n,), -1, device=device) if labels is None else labels
        return {"noise": noise.to(like), "sample": torch.cat(samples).to(like),
                "labels": labels.to(like.device)}

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        if self.couples is None:
            self.couples = self.generate(batch.x0)
        if batch.y is not None and bool(self.couples["labels"][0] < 0):
            raise ConfigError(f"[diffusion.objective] teacher = '{self.config.teacher}' is "
                              "unconditional but the data has classes: set "
                              "data.class_labels = false, or distil a class-conditional teacher")
        x0, g = batch.x0, batch.generator
        pick = randint(0, self.config.pairs, (x0.shape[0],), g, x0.device)
        return ObjectiveLosses(self.loss_at(batch, pick))

    def loss_at(self, batch: ObjectiveBatch, pick: Tensor) -> Tensor:
        """Per-sample flow-matching loss on the couples ``pick`` [B], t from the time sampler."""
        couples, g = self.couples, batch.generator
        x1, noise = couples["sample"][pick], couples["noise"][pick]
        y = couples["labels"][pick] if batch.y is not None else None
        t, importance = self.time_sampler.sample(x1.shape[0], g, x1.device)
        x_t = self.degradation.degrade(x1, t, noise)
        y = dataclasses.replace(batch, y=y).drop_labels()
        output = batch.net(*self.parameterization.condition(x_t, t), y)
        per_sample = self.parameterization.loss(output, x1, x_t, t, noise,
                                                self.loss_weighting.per_element)
        weighted = self.loss_weighting.weight(t).to(per_sample) * per_sample
        return weighted if importance is None else weighted * importance.to(weighted)

    def extra_state(self) -> dict[str, Tensor]:
        return {} if self.couples is None else {f"couples.{k}": v for k, v in self.couples.items()}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if state:
            self.couples = {k.removeprefix("couples."): v for k, v in state.items()}
