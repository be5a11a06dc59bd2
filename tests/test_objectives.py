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


# -- a teacher from a run --------------------------------------------------------------------
TINY = ["train.batch_size=8", "train.log_every=1", "train.checkpoint_every=2",
        "train.sample_every=0", "model.base_channels=8", "data.image_size=8",
        "run.device='cpu'", "diffusion.schedule.steps=20", "diffusion.sampler.steps=4"]


def _train(run: Path, steps: int, *sets: str, resume: bool = False) -> int:
    from corediff.cli import main

    args = [a for s in [*TINY, f"train.steps={steps}", *sets] for a in ("--set", s)]
    return main(["train", str(QUICKSTART), "--run-dir", str(run), *args,
                 *(["--resume"] if resume else [])])


class _Frozen(_Distil):
    """``_Distil`` that records what it saw of its teacher."""

    seen: list[tuple[bool, bool, str]] = []

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        model = self.teacher.model
        _Frozen.seen.append((any(p.requires_grad for p in model.parameters()), model.training,
                             next(model.parameters()).device.type))
        return super().losses(batch)


@pytest.fixture
def teacher_objective():
    from corediff.registry import registry

    corediff.register("objective", "teacher_test")(_Frozen)
    _Frozen.seen = []
    yield "diffusion.objective={type='teacher_test', teacher='%s'}"
    registry("objective").unregister("teacher_test")


def test_a_teacher_run_is_loaded_frozen_recorded_and_kept_across_resumes(
        tmp_path, teacher_objective, capsys):
    from corediff.engine import checkpoint

    assert _train(tmp_path / "teacher", 2) == 0
    last = tmp_path / "teacher" / "checkpoints" / "last"  # a checkpoint directory
    student = teacher_objective % last
    assert _train(tmp_path / "student", 2, student) == 0
    assert _Frozen.seen and set(_Frozen.seen) == {(False, False, "cpu")}
    state = checkpoint.load_state(tmp_path / "student" / "checkpoints" / "last")
    assert state["teacher"] == {"source": str(last), "checkpoint": str(last.resolve()),
                                "weights": "ema",
                                "sha256": checkpoint.sha256(last, "ema.safetensors")}
    assert state["extra"]["objective"] == {}  # the teacher's weights are not in the student
    assert _train(tmp_path / "student", 4, student, resume=True) == 0  # same teacher: goes on

    assert _train(tmp_path / "teacher", 4, resume=True) == 0  # its last weights change
    capsys.readouterr()
    assert _train(tmp_path / "student", 6, student, resume=True) == 2
    assert "resume needs the same teacher" in capsys.readouterr().err


def test_a_missing_teacher_is_refused_in_one_sentence(tmp_path, teacher_objective, capsys):
    assert _train(tmp_path / "student", 2, teacher_objective % (tmp_path / "none")) == 2
    err = capsys.readouterr().err
    assert f"teacher = '{tmp_path / 'none'}' cannot be loaded" in err and "\n" not in \
        err.strip()


# -- svd_spectrum ----------------------------------------------------------------------------
def _spectrum_objective(weight: float, time_sampler: str = "uniform"):
    schedule = corediff.create("schedule", "linear", steps=100, beta_end=0.005)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    param = corediff.create("parameterization", "eps", degradation=degradation)
    weighting = corediff.create("loss_weighting", "simple", degradation=degradation,
                                parameterization=param)
    times = corediff.create("time_sampler", time_sampler, degradation=degradation)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1)
    objective = corediff.create("objective", "svd_spectrum", weight=weight,
                                degradation=degradation, parameterization=param,
                                loss_weighting=weighting, time_sampler=times, model=net)
    return objective, net


def _spectrum_batch(objective, net, x0, seed, seen):
    def call(x, t, y):
        out = net(x) * (1 + t.float().view(-1, 1, 1, 1) / 100)
        seen.append((t, out.detach()))
        return out

    return ObjectiveBatch(x0, None, None, call, lambda t, noise: objective.degradation.degrade(
        x0, t, noise), torch.Generator().manual_seed(seed), True)


def test_svd_spectrum_matches_a_float64_transcription():
    """Same t, same noise (the seeded draws, replayed), the network's output taken as given:
    ε-loss + weight·mean_{c,k}(σ_k(x̂0) − σ_k(x0))² in NumPy float64, x̂0 = (x_t −
    √(1−ᾱ_t)·ε̂)/√ᾱ_t, σ_k from numpy.linalg.svd. Agreement to rtol 1e-5 (float32 against
    float64; 3.1e-7 measured)."""
    import numpy as np

    weight = 0.7
    objective, net = _spectrum_objective(weight)
    x0 = torch.rand(5, 2, 6, 9, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seen = []
    out = objective.losses(_spectrum_batch(objective, net, x0, 3, seen))
    g = torch.Generator().manual_seed(3)  # the draws replayed: t, then the noise
    t = torch.randint(1, 101, (5,), generator=g).numpy()
    noise = torch.randn(x0.shape, generator=g).double().numpy()
    (t_seen, eps_hat), = seen
    assert (t_seen.numpy() == t).all()
    betas = np.linspace(1e-3, 0.05, 100, dtype=np.float64)  # linear: 1000/T·(1e-4, 0.005)
    alpha_bar = np.concatenate([[1.0], np.cumprod(1 - betas)])[t].reshape(-1, 1, 1, 1)
    x = x0.double().numpy()
    x_t = np.sqrt(alpha_bar) * x + np.sqrt(1 - alpha_bar) * noise
    eps_hat = eps_hat.double().numpy()
    simple = ((eps_hat - noise) ** 2).reshape(5, -1).mean(1)
    x0_hat = (x_t - np.sqrt(1 - alpha_bar) * eps_hat) / np.sqrt(alpha_bar)
    gap = ((np.linalg.svd(x0_hat, compute_uv=False) - np.linalg.svd(x, compute_uv=False)) ** 2
           ).mean((1, 2))
    np.testing.assert_allclose(out.per_sample.detach().double().numpy(), simple + weight * gap,
                               rtol=1e-5)
    np.testing.assert_allclose(float(out.logs["spectrum_gap"]), gap.mean(), rtol=1e-5)
    assert (weight * gap > 0.1 * simple).all()  # the spectrum term is not negligible here


def test_svd_spectrum_with_weight_zero_is_the_denoising_loss():
    x0 = torch.rand(4, 2, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    objective, net = _spectrum_objective(0.0)
    plain = DenoisingObjective(objective.config.model_copy(update={"type": "denoising"}),
                               degradation=objective.degradation,
                               parameterization=objective.parameterization,
                               loss_weighting=objective.loss_weighting,
                               time_sampler=objective.time_sampler, model=net)
    losses = [o.losses(_spectrum_batch(o, net, x0, 4, [])).per_sample for o in (objective, plain)]
    assert torch.equal(*losses)


def test_svd_spectrum_trains_resumes_exactly_and_logs_its_gap(tmp_path, monkeypatch):
    """2 + 2 resumed steps equal 4 straight ones (losses, weights) under a non-default
    objective, whose logged ``spectrum_gap`` reaches the trackers as train/spectrum_gap."""
    from corediff.engine.rundir import read_metrics
    from corediff.engine.tracking import Trackers

    logged = []
    original = Trackers.scalars
    monkeypatch.setattr(Trackers, "scalars", lambda self, values, step, prefix="": (
        logged.append({f"{prefix}{k}": v for k, v in values.items()}),
        original(self, values, step, prefix))[1])
    sets = ["diffusion.objective={type='svd_spectrum', weight=0.5}", "train.warmup_steps=1",
            "train.min_lr_ratio=1.0"]  # a constant lr: 2 steps of a 4-step run = 2 of 2
    assert _train(tmp_path / "straight", 4, *sets) == 0
    assert _train(tmp_path / "resumed", 2, *sets) == 0
    assert _train(tmp_path / "resumed", 4, *sets, resume=True) == 0
    rows = [read_metrics(tmp_path / name / "metrics.csv") for name in ("straight", "resumed")]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]] and len(rows[0]) == 4
    for name in ("model", "ema"):
        assert (tmp_path / "straight/checkpoints/last" / f"{name}.safetensors").read_bytes() == (
            tmp_path / "resumed/checkpoints/last" / f"{name}.safetensors").read_bytes()
    gaps = [row["train/spectrum_gap"] for row in logged if "train/spectrum_gap" in row]
    assert len(gaps) == 8 and all(gap > 0 for gap in gaps)
