"""Few-step objectives and the consistency sampler against float64 transcriptions of their
papers (numpy, independent of corediff): improved consistency training (Song & Dhariwal
2023), consistency distillation (Song et al. 2023, Algorithm 2), progressive distillation
(Salimans & Ho 2022, Algorithm 2), reflow (Liu et al. 2023) and multistep consistency
sampling (Song et al. 2023, Algorithm 1). Same noise, same times; tolerances per test."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from corediff.errors import ConfigError
from corediff.interfaces import ObjectiveBatch
from corediff.maths.consistency import (
    boundary_scalings,
    discretisation_steps,
    lognormal_level_probs,
    training_sigmas,
)
from corediff_plugins.degradations.edm import EDMDegradation
from corediff_plugins.loss_weightings.edm import EDMWeighting
from corediff_plugins.objectives.consistency_training import ConsistencyTrainingObjective
from corediff_plugins.parameterizations.consistency import ConsistencyParameterization
from corediff_plugins.schedules.edm import EDMSchedule
from corediff_plugins.time_samplers.lognormal_sigma import LogNormalSigmaTimeSampler

SHAPE = (3, 1, 4, 4)
ROOT = Path(__file__).resolve().parents[1]
SIGMA_DATA, SIGMA_MIN, SIGMA_MAX, RHO = 0.5, 0.002, 80.0, 7.0


# -- references (float64 numpy transcriptions of the papers) ---------------------------------
def ref_levels(k: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT eq. 12, written out as the paper states it."""
    k_prime = math.floor(total / (math.log2(math.floor(s1 / s0)) + 1))
    return min(s0 * 2 ** math.floor(k / k_prime), s1) + 1


def ref_karras(n: int) -> np.ndarray:
    """CM eq. 5: σ_i = (σ_min^(1/ρ) + (i − 1)/(N − 1)·(σ_max^(1/ρ) − σ_min^(1/ρ)))^ρ."""
    i = np.arange(1, n + 1)
    return (SIGMA_MIN ** (1 / RHO) + (i - 1) / (n - 1)
            * (SIGMA_MAX ** (1 / RHO) - SIGMA_MIN ** (1 / RHO))) ** RHO


def ref_probs(sigmas: np.ndarray, p_mean: float = -1.1, p_std: float = 2.0) -> np.ndarray:
    """iCT eq. 13 with math.erf level by level."""
    erf = [math.erf((math.log(s) - p_mean) / (math.sqrt(2) * p_std)) for s in sigmas]
    mass = np.diff(np.array(erf))
    return mass / mass.sum()


def ref_F(x_in: np.ndarray, c_noise: np.ndarray, w: float) -> np.ndarray:
    """A smooth stand-in network F(c_in·x; c_noise) with one weight w."""
    c = c_noise.reshape(-1, 1, 1, 1)
    return w * np.tanh(x_in) + 0.2 * np.cos(3 * c) * x_in - 0.1 * c


def ref_consistency_f(x: np.ndarray, sigma: np.ndarray, w: float) -> np.ndarray:
    """f_θ of CM App. C: c_skip·x + c_out·F(c_in·x, ¼·ln σ)."""
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = SIGMA_DATA**2 / ((s - SIGMA_MIN) ** 2 + SIGMA_DATA**2)
    c_out = (s - SIGMA_MIN) * SIGMA_DATA / np.sqrt(s**2 + SIGMA_DATA**2)
    c_in = 1 / np.sqrt(s**2 + SIGMA_DATA**2)
    return c_skip * x + c_out * ref_F(c_in * x, 0.25 * np.log(sigma), w)


def ref_ict_loss(x0, noise, sigma, sigma_next, w, w_target, c):
    """iCT: λ(σ_i)·d(f_θ(x0 + σ_{i+1}z, σ_{i+1}), f_θ⁻(x0 + σ_i z, σ_i)), pseudo-Huber d."""
    b = lambda s: s.reshape(-1, 1, 1, 1)  # noqa: E731
    student = ref_consistency_f(x0 + b(sigma_next) * noise, sigma_next, w)
    target = ref_consistency_f(x0 + b(sigma) * noise, sigma, w_target)
    d = np.sqrt(((student - target) ** 2).reshape(len(x0), -1).sum(1) + c * c) - c
    return d / (sigma_next - sigma)


# -- corediff pieces -------------------------------------------------------------------------
class StandIn(nn.Module):
    """ref_F in torch, with w a parameter (float64)."""

    def __init__(self, w: float = 0.7) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x_in, c_noise, y=None):
        c = c_noise.to(x_in.dtype).view(-1, 1, 1, 1)
        return self.w * torch.tanh(x_in) + 0.2 * torch.cos(3 * c) * x_in - 0.1 * c


def edm_parts(model: nn.Module) -> dict:
    degradation = EDMDegradation(schedule=EDMSchedule())
    param = ConsistencyParameterization(degradation=degradation)
    return dict(degradation=degradation, parameterization=param,
                loss_weighting=EDMWeighting(degradation=degradation, parameterization=param),
                time_sampler=LogNormalSigmaTimeSampler(degradation=degradation), model=model)


def make_batch(x0: torch.Tensor, net, degradation, seed: int = 0) -> ObjectiveBatch:
    return ObjectiveBatch(x0=x0, y=None, index=None, net=net,
                          degrade=lambda t, noise: degradation.degrade(x0, t, noise),
                          generator=torch.Generator().manual_seed(seed), training=True)


def randn(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- consistency maths -----------------------------------------------------------------------
def test_curriculum_and_grid_and_level_probabilities_match_ict():
    for total in (800, 1000, 12345):
        assert [discretisation_steps(k, total) for k in range(0, total, 7)] == [
            ref_levels(k, total) for k in range(0, total, 7)]
    assert discretisation_steps(0, 800) == 11 and discretisation_steps(799, 800) == 1281
    for n in (11, 41, 1281):
        sigmas = training_sigmas(n, SIGMA_MIN, SIGMA_MAX, RHO)
        np.testing.assert_allclose(sigmas.numpy(), ref_karras(n), rtol=1e-12)
        np.testing.assert_allclose(lognormal_level_probs(sigmas).numpy(),
                                   ref_probs(sigmas.numpy()), rtol=1e-9, atol=1e-15)


def test_boundary_scalings_give_the_identity_at_sigma_min():
    sigma = torch.tensor([SIGMA_MIN, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out = boundary_scalings(sigma, SIGMA_DATA, SIGMA_MIN)
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[1].item() == pytest.approx(0.25 / (0.998**2 + 0.25), rel=1e-14)
    assert c_out[2].item() == pytest.approx(79.998 * 0.5 / math.sqrt(6400.25), rel=1e-14)


# -- consistency training --------------------------------------------------------------------
def test_consistency_training_matches_ict_and_stops_the_target_gradient():
    """Loss to 1e-10 relative; dL/dw equals the reference's derivative with the target's w
    held fixed (central differences, 1e-6 relative): θ⁻ = stopgrad(θ)."""
    model = StandIn(0.7)
    parts = edm_parts(model)
    objective = ConsistencyTrainingObjective(
        ConsistencyTrainingObjective.Config(curriculum_steps=800), **parts)
    x0 = randn(*SHAPE, seed=1).clamp(-1, 1)
    noise = randn(*SHAPE, seed=2)
    sigmas = training_sigmas(objective.levels(), SIGMA_MIN, SIGMA_MAX, RHO)
    i = torch.tensor([0, 4, 9])
    batch = make_batch(x0, model, parts["degradation"])
    loss = objective.loss_at(batch, sigmas[i], sigmas[i + 1], noise)
    c = 0.00054 * math.sqrt(16)
    args = (x0.numpy(), noise.numpy(), sigmas[i].numpy(), sigmas[i + 1].numpy())
    expected = ref_ict_loss(*args, 0.7, 0.7, c)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-10)
    loss.sum().backward()
    h = 1e-6
    slope = (ref_ict_loss(*args, 0.7 + h, 0.7, c) - ref_ict_loss(*args, 0.7 - h, 0.7, c)) / (2 * h)
    assert model.w.grad.item() == pytest.approx(slope.sum(), rel=1e-6)


def test_consistency_training_state_follows_the_curriculum_and_round_trips():
    parts = edm_parts(StandIn())
    config = ConsistencyTrainingObjective.Config(curriculum_steps=80)
    objective = ConsistencyTrainingObjective(config, **parts)
    x0 = randn(*SHAPE, seed=3)
    out = objective.losses(make_batch(x0, parts["model"], parts["degradation"]))
    assert out.per_sample.shape == (3,) and out.logs["levels"].item() == 11
    objective.after_step(parts["model"], 40)
    assert objective.levels() == ref_levels(40, 80) == 161
    resumed = ConsistencyTrainingObjective(config, **parts)
    resumed.load_extra_state(objective.extra_state())
    assert resumed.levels() == 161
    again = resumed.losses(make_batch(x0, parts["model"], parts["degradation"], seed=5))
    first = objective.losses(make_batch(x0, parts["model"], parts["degradation"], seed=5))
    assert torch.equal(again.per_sample, first.per_sample)


# -- consistency distillation ----------------------------------------------------------------
def ref_edm_denoiser(x, sigma, w):
    """The teacher D(x; σ) of EDM Table 1 around ref_F."""
    s = sigma.reshape(-1, 1, 1, 1)
    total = s**2 + SIGMA_DATA**2
    return (SIGMA_DATA**2 / total * x
            + s * SIGMA_DATA / np.sqrt(total) * ref_F(x / np.sqrt(total), 0.25 * np.log(sigma), w))


def ref_cd_loss(x0, noise, sigma, sigma_next, w, w_target, w_teacher, solver):
    """CM Algorithm 2: x_{n+1} = x + t_{n+1}z; x̂_n by one Euler/Heun step of the teacher's
    ODE; ||f_θ(x_{n+1}, t_{n+1}) − f_θ⁻(x̂_n, t_n)||² averaged over dimensions (CM's l2)."""
    b = lambda s: s.reshape(-1, 1, 1, 1)  # noqa: E731
    x = x0 + b(sigma_next) * noise
    d = (x - ref_edm_denoiser(x, sigma_next, w_teacher)) / b(sigma_next)
    x_hat = x + b(sigma - sigma_next) * d
    if solver == "heun":
        d_hat = (x_hat - ref_edm_denoiser(x_hat, sigma, w_teacher)) / b(sigma)
        x_hat = x + b(sigma - sigma_next) * (d + d_hat) / 2
    diff = ref_consistency_f(x, sigma_next, w) - ref_consistency_f(x_hat, sigma, w_target)
    return (diff**2).reshape(len(x0), -1).mean(1)


def edm_teacher(w: float):
    from types import SimpleNamespace

    from corediff.interfaces import DataSpec
    from corediff_plugins.parameterizations.edm import EDMParameterization

    degradation = EDMDegradation(schedule=EDMSchedule())
    return SimpleNamespace(degradation=degradation, model=StandIn(w),
                           parameterization=EDMParameterization(degradation=degradation),
                           data_spec=DataSpec(1, 4, None))


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_consistency_distillation_matches_algorithm_2(solver):
    """Loss to 1e-10 relative with student w 0.7, target w 0.4, teacher w 0.9; the gradient
    reaches the student only; the target follows θ⁻ ← μθ⁻ + (1 − μ)θ and round-trips."""
    from corediff_plugins.objectives.consistency_distillation import (
        ConsistencyDistillationObjective,
    )

    model = StandIn(0.7)
    parts = edm_parts(model)
    config = ConsistencyDistillationObjective.Config(
        teacher="runs/x", solver=solver, start_from_teacher=False)
    objective = ConsistencyDistillationObjective(config, **parts)
    objective.teacher = edm_teacher(0.9)
    with torch.no_grad():
        objective.target.w.fill_(0.4)
    x0, noise = randn(*SHAPE, seed=1).clamp(-1, 1), randn(*SHAPE, seed=2)
    sigmas = training_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO)
    n = torch.tensor([0, 8, 16])
    loss = objective.loss_at(make_batch(x0, model, parts["degradation"]), sigmas[n],
                             sigmas[n + 1], noise)
    args = (x0.numpy(), noise.numpy(), sigmas[n].numpy(), sigmas[n + 1].numpy())
    np.testing.assert_allclose(loss.detach().numpy(),
                               ref_cd_loss(*args, 0.7, 0.4, 0.9, solver), rtol=1e-10)
    loss.sum().backward()
    h = 1e-6
    slope = (ref_cd_loss(*args, 0.7 + h, 0.4, 0.9, solver)
             - ref_cd_loss(*args, 0.7 - h, 0.4, 0.9, solver)) / (2 * h)
    assert model.w.grad.item() == pytest.approx(slope.sum(), rel=1e-6)
    assert objective.target.w.grad is None and objective.teacher.model.w.grad is None
    objective.after_step(model, 1)
    assert objective.target.w.item() == pytest.approx(0.95 * 0.4 + 0.05 * 0.7, rel=1e-15)
    resumed = ConsistencyDistillationObjective(config, **edm_parts(StandIn(0.0)))
    resumed.load_extra_state(objective.extra_state())
    assert resumed.target.w.item() == objective.target.w.item()


def test_distilled_students_start_from_the_teacher_in_a_fresh_run_only():
    """CD copies the teacher into θ and θ⁻, PD into θ, when the teacher is set in a fresh
    run; a resumed objective (state loaded) keeps its weights; another network is refused."""
    from corediff_plugins.objectives.consistency_distillation import (
        ConsistencyDistillationObjective,
    )
    from corediff_plugins.objectives.progressive_distillation import (
        ProgressiveDistillationObjective,
    )

    cd = ConsistencyDistillationObjective(ConsistencyDistillationObjective.Config(
        teacher="runs/x"), **edm_parts(StandIn(0.7)))
    cd.teacher = edm_teacher(0.9)
    assert cd.model.w.item() == cd.target.w.item() == 0.9
    pd_config = ProgressiveDistillationObjective.Config(teacher="runs/x")
    pd = ProgressiveDistillationObjective(pd_config, **vp_parts(StandIn(0.7)))
    pd.teacher = edm_teacher(0.9)
    assert pd.model.w.item() == 0.9
    resumed = ProgressiveDistillationObjective(pd_config, **vp_parts(StandIn(0.7)))
    resumed.load_extra_state({**pd.extra_state(), "k": torch.tensor(3)})
    resumed.teacher = edm_teacher(0.9)
    assert resumed.model.w.item() == 0.7
    other = edm_teacher(0.9)
    other.model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="another network"):
        ProgressiveDistillationObjective(pd_config, **vp_parts(StandIn(0.7))).teacher = other


# -- progressive distillation ----------------------------------------------------------------
def ref_pd_loss(x, eps, alpha_bar, t, mid, t2, w_student, w_teacher):
    """Salimans & Ho 2022, Algorithm 2, line by line (v-prediction: x̂ = α·z − σ·v̂)."""
    b = lambda v: v.reshape(-1, 1, 1, 1)  # noqa: E731
    a = lambda s: b(np.sqrt(alpha_bar[s]))  # noqa: E731
    s_ = lambda s: b(np.sqrt(1 - alpha_bar[s]))  # noqa: E731
    x_hat_of = lambda z, s, w: a(s) * z - s_(s) * ref_F(z, s.astype(float), w)  # noqa: E731
    z = a(t) * x + s_(t) * eps
    x_hat = x_hat_of(z, t, w_teacher)
    z1 = a(mid) * x_hat + s_(mid) / s_(t) * (z - a(t) * x_hat)
    x_hat1 = x_hat_of(z1, mid, w_teacher)
    z2 = a(t2) * x_hat1 + s_(t2) / s_(mid) * (z1 - a(mid) * x_hat1)
    x_tilde = (z2 - s_(t2) / s_(t) * z) / (a(t2) - s_(t2) / s_(t) * a(t))
    snr = alpha_bar[t] / (1 - alpha_bar[t])
    mse = ((x_tilde - x_hat_of(z, t, w_student)) ** 2).reshape(len(x), -1).mean(1)
    return np.maximum(snr, 1) * mse


def vp_parts(model):
    from corediff_plugins.degradations.gaussian import GaussianDegradation
    from corediff_plugins.loss_weightings.simple import SimpleWeighting
    from corediff_plugins.parameterizations.v import VParameterization
    from corediff_plugins.schedules.cosine import CosineSchedule
    from corediff_plugins.time_samplers.uniform import UniformTimeSampler

    degradation = GaussianDegradation(schedule=CosineSchedule())
    param = VParameterization(degradation=degradation)
    return dict(degradation=degradation, parameterization=param,
                loss_weighting=SimpleWeighting(degradation=degradation, parameterization=param),
                time_sampler=UniformTimeSampler(degradation=degradation), model=model)


def test_progressive_distillation_matches_algorithm_2_and_halves_over_rounds():
    """Loss to 1e-10 relative (teacher w 0.9, student 0.7) on the round's grid, the last step
    (t'' = 0) included; round 1 halves N and distils from the student as round 0 left it."""
    from types import SimpleNamespace

    from corediff.interfaces import DataSpec
    from corediff.maths.timesteps import time_grid
    from corediff_plugins.objectives.progressive_distillation import (
        ProgressiveDistillationObjective,
    )

    model = StandIn(0.7)
    parts = vp_parts(model)
    config = ProgressiveDistillationObjective.Config(
        teacher="runs/x", teacher_steps=16, rounds=2, steps_per_round=5,
        start_from_teacher=False)
    objective = ProgressiveDistillationObjective(config, **parts)
    teacher_parts = vp_parts(StandIn(0.9))
    objective.teacher = SimpleNamespace(data_spec=DataSpec(1, 4, None), **teacher_parts)
    t, mid, t2 = objective.grid(torch.device("cpu"))
    assert t.tolist() == time_grid(1000, 8, "trailing") and objective.student_steps() == 8
    assert objective.grid(torch.device("cpu"))[0] is t  # made once per round, not per step
    assert mid.tolist() == time_grid(1000, 16, "trailing")[1::2] and t2[-1] == 0
    alpha_bar = parts["degradation"].schedule.values().numpy()
    x0, noise = randn(*SHAPE, seed=1).clamp(-1, 1), randn(*SHAPE, seed=2)
    i = torch.tensor([0, 3, 7])
    batch = make_batch(x0, model, parts["degradation"])
    loss = objective.loss_at(batch, t[i], mid[i], t2[i], noise)
    args = (x0.numpy(), noise.numpy(), alpha_bar, t[i].numpy(), mid[i].numpy(), t2[i].numpy())
    np.testing.assert_allclose(loss.detach().numpy(), ref_pd_loss(*args, 0.7, 0.9), rtol=1e-10)
    with torch.no_grad():
        model.w.fill_(0.5)
    for step in range(1, 6):
        objective.after_step(model, step)
    with torch.no_grad():
        model.w.fill_(0.3)
    assert objective.round() == 1 and objective.student_steps() == 4
    t, mid, t2 = objective.grid(torch.device("cpu"))
    batch = make_batch(x0[:2], model, parts["degradation"])
    loss = objective.loss_at(batch, t[i[:2]], mid[i[:2]], t2[i[:2]], noise[:2])
    args = (x0[:2].numpy(), noise[:2].numpy(), alpha_bar, t[i[:2]].numpy(),
            mid[i[:2]].numpy(), t2[i[:2]].numpy())
    np.testing.assert_allclose(loss.detach().numpy(), ref_pd_loss(*args, 0.3, 0.5), rtol=1e-10)
    resumed = ProgressiveDistillationObjective(config, **vp_parts(StandIn(0.0)))
    resumed.load_extra_state(objective.extra_state())
    assert resumed.round() == 1 and resumed.round_teacher.w.item() == 0.5


def test_progressive_distillation_refuses_a_recipe_it_cannot_run():
    from corediff.recipe import load_recipe

    with pytest.raises(ConfigError) as refused:
        load_recipe(ROOT / "recipes" / "few_step_pd.toml", [
            "diffusion.parameterization.type='eps'", "diffusion.objective.teacher_steps=2048",
            "diffusion.objective.rounds=1"])
    assert "type = \"v\"" in str(refused.value) and "teacher_steps = 2048 exceeds the " \
        "schedule's steps = 1000" in str(refused.value)


# -- reflow ----------------------------------------------------------------------------------
def flow_parts(model):
    from corediff_plugins.degradations.flow import FlowDegradation
    from corediff_plugins.loss_weightings.simple import SimpleWeighting
    from corediff_plugins.parameterizations.velocity import VelocityParameterization
    from corediff_plugins.schedules.flow import FlowSchedule
    from corediff_plugins.time_samplers.uniform import UniformTimeSampler

    degradation = FlowDegradation(schedule=FlowSchedule())
    param = VelocityParameterization(degradation=degradation)
    return dict(degradation=degradation, parameterization=param,
                loss_weighting=SimpleWeighting(degradation=degradation, parameterization=param),
                time_sampler=UniformTimeSampler(degradation=degradation), model=model)


def flow_teacher(w: float):
    from types import SimpleNamespace

    from corediff.denoiser import Denoiser
    from corediff.interfaces import DataSpec
    from corediff_plugins.samplers.flow_euler import FlowEulerSampler

    parts = flow_parts(StandIn(w))
    sampler = FlowEulerSampler(FlowEulerSampler.Config(steps=3), degradation=parts[
        "degradation"], parameterization=parts["parameterization"])
    return SimpleNamespace(
        data_spec=DataSpec(1, 4, None), sampler=sampler, labels=lambda n: None,
        recipe=SimpleNamespace(sample=SimpleNamespace(batch_size=4)),
        denoiser=lambda y: Denoiser(parts["model"], parts["parameterization"], labelled=True),
        **parts)


def test_reflow_generates_couples_once_and_flow_matches_on_them():
    """The couples are the teacher's sampler run on their own noise (exactly); the loss is
    ||v_θ(x_t, t) − (ε − x)||² on them, to 1e-12 relative; resumed state is reused as is
    (the teacher is not run again)."""
    from corediff_plugins.objectives.reflow import ReflowObjective

    model = StandIn(0.7)
    parts = flow_parts(model)
    config = ReflowObjective.Config(teacher="runs/x", pairs=10, seed=3)
    objective = ReflowObjective(config, **parts)
    objective.teacher = teacher = flow_teacher(0.9)
    x0 = randn(*SHAPE, seed=1)
    out = objective.losses(make_batch(x0, model, parts["degradation"]))
    couples = objective.couples
    assert couples["noise"].shape == (10, 1, 4, 4) and out.per_sample.shape == (3,)
    expected = teacher.sampler.sample(teacher.denoiser(None), couples["noise"][4:8].float(),
                                      generator=torch.Generator()).sample
    assert torch.equal(couples["sample"][4:8], expected.double())
    assert torch.equal(couples["noise"], torch.randn(
        (10, 1, 4, 4), generator=torch.Generator().manual_seed(3)).double())
    resumed = ReflowObjective(config, **flow_parts(StandIn(0.7)))
    resumed.load_extra_state(objective.extra_state())
    again = resumed.losses(make_batch(x0, model, parts["degradation"], seed=4))
    first = objective.losses(make_batch(x0, model, parts["degradation"], seed=4))
    assert resumed.teacher is None and torch.equal(again.per_sample, first.per_sample)
    labelled = dataclasses.replace(make_batch(x0, model, parts["degradation"]),
                                   y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="unconditional but the data has classes"):
        objective.losses(labelled)
    pick = torch.tensor([1, 9, 4])
    objective.time_sampler.sample = lambda b, g, d: (torch.tensor([0.1, 0.5, 0.95],
                                                                  dtype=torch.float64), None)
    loss = objective.loss_at(make_batch(x0, model, parts["degradation"]), pick)
    x1, eps = couples["sample"][pick].double().numpy(), couples["noise"][pick].double().numpy()
    t = np.array([0.1, 0.5, 0.95]).reshape(-1, 1, 1, 1)
    x_t = (1 - t) * x1 + t * eps
    v = ref_F(x_t, 1000 * t.ravel(), 0.7)
    expected = ((v - (eps - x1)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-12)


# -- consistency sampler ---------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampler_is_algorithm_1(steps):
    """x ← f(x_T, T); x ← f(x + sqrt(τ² − σ_min²)·z, τ) per level τ (same z), to 1e-12; one
    network evaluation per level; the levels are the Karras grid's inner ones."""
    from corediff_plugins.samplers.consistency import ConsistencySampler

    parts = edm_parts(StandIn(0.7))
    sampler = ConsistencySampler(ConsistencySampler.Config(steps=steps),
                                 degradation=parts["degradation"],
                                 parameterization=parts["parameterization"])
    taus = ref_karras(steps + 1)[::-1][1:-1]
    assert sampler.timesteps() == pytest.approx([SIGMA_MAX, *taus], rel=1e-12)
    x_T = SIGMA_MAX * randn(*SHAPE, seed=1)
    result = sampler.sample(lambda x, t, y=None: parts["model"](x, t), x_T,
                            generator=torch.Generator().manual_seed(5))
    assert result.nfe == sampler.nfe() == steps
    g = torch.Generator().manual_seed(5)
    x = ref_consistency_f(x_T.numpy(), np.full(3, SIGMA_MAX), 0.7)
    for tau in taus:
        z = torch.randn(SHAPE, generator=g, dtype=torch.float64).numpy()
        x = ref_consistency_f(x + math.sqrt(tau**2 - SIGMA_MIN**2) * z, np.full(3, tau), 0.7)
    np.testing.assert_allclose(result.sample.numpy(), x, rtol=1e-12, atol=1e-12)


def test_consistency_sampler_refuses_levels_that_do_not_fit():
    from corediff_plugins.samplers.consistency import ConsistencySampler

    with pytest.raises(ValueError, match="needs 1"):
        ConsistencySampler.Config(steps=2, sigmas=(1.0, 0.5))
    with pytest.raises(ValueError, match="strictly decreasing"):
        ConsistencySampler.Config(steps=3, sigmas=(0.5, 1.0))


# -- trained through the engine --------------------------------------------------------------
EDM_SETS = ["diffusion.schedule={type='edm', steps=20}", "diffusion.degradation={type='edm'}",
            "diffusion.loss_weighting={type='edm'}", "diffusion.guidance={type='none'}",
            "diffusion.time_sampler={type='lognormal_sigma'}"]
STUDENTS = {
    "progressive_distillation": ([], [
        "diffusion.objective={type='progressive_distillation', teacher='%s', teacher_steps=4, "
        "rounds=2, steps_per_round=1}"]),
    "consistency_distillation": (EDM_SETS + ["diffusion.parameterization={type='edm'}",
                                             "diffusion.sampler={type='edm_euler', steps=4}"],
                                 EDM_SETS + [
        "diffusion.parameterization={type='consistency'}",
        "diffusion.sampler={type='consistency', steps=2}",
        "diffusion.objective={type='consistency_distillation', teacher='%s', steps=6}"]),
}


@pytest.mark.parametrize("objective", sorted(STUDENTS))
def test_a_distilled_student_resumes_exactly(tmp_path, objective):
    """A 1-step teacher run, then its student 1 + 1 resumed steps against 2 straight ones:
    the same weights byte for byte (the round's teacher, the EMA target and the step count
    come back from the checkpoint); after one step the student is still within 1e-2 of the
    teacher's weights (it started from them; Adam moves a weight ~lr = 1e-3 a step)."""
    from safetensors.torch import load_file
    from test_objectives import _train

    teacher_sets, student_sets = STUDENTS[objective]
    assert _train(tmp_path / "teacher", 1, *teacher_sets) == 0
    last = tmp_path / "teacher" / "checkpoints" / "last"
    sets = [s.replace("%s", str(last)) for s in student_sets] + [
        "train.warmup_steps=1", "train.min_lr_ratio=1.0", "train.lr=1e-3", "run.seed=1"]
    assert _train(tmp_path / "straight", 2, *sets) == 0
    assert _train(tmp_path / "resumed", 1, *sets) == 0
    teacher, student = (load_file(d / "checkpoints/last/model.safetensors") for d in (
        tmp_path / "teacher", tmp_path / "resumed"))
    assert teacher.keys() == student.keys()
    assert max((teacher[k] - student[k]).abs().max().item() for k in teacher) < 1e-2
    assert _train(tmp_path / "resumed", 2, *sets, resume=True) == 0
    for name in ("model", "ema"):
        assert (tmp_path / "straight/checkpoints/last" / f"{name}.safetensors").read_bytes() == (
            tmp_path / "resumed/checkpoints/last" / f"{name}.safetensors").read_bytes()
