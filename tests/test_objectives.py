"""The objective kind: the default ``denoising`` stays out of resolved recipes (fingerprints
unchanged), teachers are declared, and ``corediff.testing.check_objective`` catches an
objective whose gradients miss the network or reach its teacher."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import pytest
import torch

import corediff
from corediff.config import ObjectiveConfig
from corediff.interfaces import ObjectiveBatch, ObjectiveLosses
from corediff.recipe import recipe_to_dict
from corediff.testing import chains, check_objective
from corediff_plugins.objectives.denoising import DenoisingObjective

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


@pytest.mark.parametrize("overrides", [[], ["diffusion.objective.type='denoising'"]])
def test_the_default_objective_is_left_out_of_the_resolved_recipe(overrides):
    recipe = corediff.load_recipe(QUICKSTART, overrides)
    assert recipe.diffusion.objective.type == "denoising"
    assert "objective" not in recipe_to_dict(recipe)["diffusion"]


def test_a_teacher_for_an_objective_that_takes_none_is_refused():
    with pytest.raises(corediff.CorediffError, match=r"\[diffusion.objective\].*takes no "
                       "teacher"):
        corediff.load_recipe(QUICKSTART, [
            "diffusion.objective={type='denoising', teacher='runs/quickstart'}"])


class _Detached(DenoisingObjective):
    """Denoising on a detached network output: no gradient reaches the network."""

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        net = batch.net
        batch.net = lambda *args: net(*args).detach().requires_grad_()
        return super().losses(batch)


class _TeacherConfig(ObjectiveConfig):
    type: Literal["teacher_test"] = "teacher_test"


class _Distil(DenoisingObjective):
    """Regress the teacher's output at the student's input, the teacher run under no_grad
    unless ``leak`` (then its gradients are taken too)."""

    Config = _TeacherConfig
    needs_teacher = True
    leak = False

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        t = torch.full((len(batch.x0),), 3, device=batch.x0.device)
        x_t = batch.degrade(t, self.degradation.sample_noise(batch.x0, batch.generator))
        with torch.set_grad_enabled(self.leak):
            target = self.teacher.model(x_t, t, batch.y)
        return ObjectiveLosses((batch.net(x_t, t, batch.y) - target).square().flatten(1).mean(1))


class _Target(DenoisingObjective):
    """Denoising plus a pull towards an EMA target network (decay 0.5) that it owns."""

    def __init__(self, config, *, model, **components):
        super().__init__(config, model=model, **components)
        self.target = copy.deepcopy(model).requires_grad_(False)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"target": self.target}

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        t = torch.full((len(batch.x0),), 3, device=batch.x0.device)
        pull = (batch.net(batch.x0, t, None) - self.target(batch.x0, t, None)).square()
        return ObjectiveLosses(super().losses(batch).per_sample + pull.flatten(1).mean(1))

    def after_step(self, model, step):
        for mine, theirs in zip(self.target.parameters(), model.parameters(), strict=True):
            mine.data.lerp_(theirs.detach(), 0.5)


class _Forgetful(_Target):
    def load_extra_state(self, state):
        pass


def _chain(objective: type) -> dict[str, type]:
    chain = chains("objective", "denoising")[0]
    return {**chain, "objective": objective}


def test_check_objective_passes_denoising_and_a_frozen_teacher():
    check_objective(_chain(DenoisingObjective))
    check_objective(_chain(_Distil))
    check_objective(_chain(_Target))


@pytest.mark.parametrize(("objective", "message"), [
    (_Detached, "no gradient reaches the trained network"),
    (type("_Leak", (_Distil,), {"leak": True}), "gradients reach the teacher"),
    (_Forgetful, "losses after the state's round trip"),
])
def test_check_objective_catches_gradients_in_the_wrong_place(objective, message):
    with pytest.raises(AssertionError, match=message):
        check_objective(_chain(objective))
