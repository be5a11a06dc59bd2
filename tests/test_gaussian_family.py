"""One Gaussian family (issue 19): VP, flow matching and EDM share α(t), σ(t), λ(t) and their
inverses (corediff.maths.family), so every σ-space solver (euler, heun, dpmpp_2m, its SDE,
unipc) drives every member.

* the family maths: α, σ, λ and t(λ), t(σ/α) round trips on each member;
* flow and EDM models sampled with DPM-Solver++(2M) and UniPC (and Euler, Heun): on Gaussian
  data, where the exact denoiser and the probability-flow ODE's solution are closed-form, the
  samples converge to the exact x*(0) at the declared order; against diffusers step by step
  where it has the combination (DPMSolverMultistep and UniPCMultistep with flow sigmas,
  EDMDPMSolverMultistep);
* the bugs fixed with it, each test failing before: zero-terminal-SNR schedules (NaN at
  σ = ∞ and an IndexError in dpmpp_2m, unipc, euler), EDM samplers ignoring the schedule's ρ,
  "trailing" taking N + 1 steps (61 at T = 1000), two spacing vocabularies;
* a recipe composing a family solver with a degradation outside the family is refused in one
  sentence.
"""

from __future__ import annotations

import math
from unittest import mock

import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm_module
import diffusers.schedulers.scheduling_edm_dpmsolver_multistep as edm_dpm_module
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)

import corediff
from corediff.denoiser import Denoiser
from corediff.errors import ConfigError
from corediff.maths.edm import sigma_steps
from corediff.maths.family import GaussianFamily
from corediff.maths.gaussian import step_from_sigma
from corediff.maths.solvers import SolverGridConfig, nodes, solver_steps
from corediff.maths.timesteps import TimeGridConfig

FAMILY_SAMPLERS = ("euler", "heun", "dpmpp_2m", "unipc")
#: diffusers converts float64 tensors with np.array(..., copy=False).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
#: member -> (schedule, its fields, degradation, parameterization)
MEMBERS = {
    "vp": ("cosine", {"steps": 1000}, "gaussian", "v"),
    "vp_linear": ("linear", {"steps": 1000}, "gaussian", "v"),
    "flow": ("flow", {}, "flow", "velocity"),
    "edm": ("edm", {}, "edm", "edm"),
}


def build(member: str, sampler: str | None = None, schedule_fields=None, **fields):
    schedule_type, defaults, degradation_type, param = MEMBERS[member]
    schedule = corediff.create("schedule", schedule_type, **{**defaults, **(schedule_fields or {})})
    degradation = corediff.create("degradation", degradation_type, schedule=schedule)
    parameterization = corediff.create("parameterization", param, degradation=degradation)
    if sampler is None:
        return degradation, parameterization
    return corediff.create("sampler", sampler, degradation=degradation,
                           parameterization=parameterization, **fields)


# -- the family maths ---------------------------------------------------------------------------
@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_alpha_sigma_lambda_and_inverses(member):
    degradation, _ = build(member)
    assert isinstance(degradation, GaussianFamily)
    assert "gaussian_family" in degradation.provides
    t_max = float(degradation.t_max)
    t = torch.tensor([0.25, 0.5, 0.9, 1.0], dtype=torch.float64) * t_max
    if member == "vp":
        t = t.clamp_min(1)
    alpha, sigma, lam = degradation.alpha(t), degradation.sigma(t), degradation.lambda_(t)
    torch.testing.assert_close(lam, (alpha / sigma).log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(degradation.noise_level(t), sigma / alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(degradation.t_from_lambda(lam), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(degradation.t_from_sigma(sigma / alpha), t, rtol=1e-9, atol=1e-9)
    zero = torch.zeros(1, dtype=torch.float64)
    assert degradation.alpha(zero).item() == 1 and degradation.sigma(zero).item() == 0
    assert degradation.lambda_(zero).item() == math.inf
    # x_t = α·x0 + σ·ε is what the degradation computes
    x0 = torch.rand(4, 3, 2, 2, dtype=torch.float64)
    eps = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    expected = alpha.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(degradation.degrade(x0, t, eps), expected, rtol=1e-12, atol=1e-12)


def test_pure_noise_ends():
    flow, _ = build("flow")
    one = torch.ones(1, dtype=torch.float64)
    assert flow.alpha(one).item() == 0 and flow.lambda_(one).item() == -math.inf
    assert flow.t_from_lambda(-math.inf * one).item() == 1
    assert flow.t_from_sigma(math.inf * one).item() == 1
    vp, _ = build("vp", schedule_fields={"rescale_zero_terminal_snr": True})
    top = torch.tensor([1000.0], dtype=torch.float64)
    assert vp.alpha(top).item() == 0 and vp.noise_level(top).item() == math.inf
    assert vp.t_from_sigma(math.inf * one).item() == 1000


# -- flow and EDM with every family solver: the exact probability-flow ODE on Gaussian data ------
MEAN, STD = 0.3, 0.6


class ExactDenoiser(Denoiser):
    """The network a parameterization would need to predict the exact x̂0 of data
    N(MEAN, STD²) per pixel: E[x0 | x_t] = MEAN + STD²·α·(x_t − α·MEAN)/(α²·STD² + σ²)."""

    def __init__(self, degradation, parameterization):
        super().__init__(lambda x, t: x, parameterization)
        self.degradation = degradation

    def output(self, x, t, y):
        self.evaluations += 1
        alpha, sigma = (v.to(x.dtype).view(-1, 1, 1, 1) for v in (
            self.degradation.alpha(t.double()), self.degradation.sigma(t.double())))
        x0 = MEAN + STD**2 * alpha * (x - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)
        eps = torch.where(sigma > 0, (x - alpha * x0) / sigma, torch.zeros_like(x))
        return self.parameterization.target(x0, x, t, eps)


def exact_run(member: str, name: str, steps: int, **fields):
    """(sample, the exact x*(0), the largest error of a visited state) from a fixed x_T."""
    sampler = build(member, name, steps=steps, **fields)
    degradation = sampler.degradation
    grid = sampler.timesteps()
    t_top = torch.tensor([grid[0]], dtype=torch.float64)
    alpha, sigma = degradation.alpha(t_top).item(), degradation.sigma(t_top).item()
    z = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = alpha * MEAN + math.sqrt(alpha**2 * STD**2 + sigma**2) * z
    result = sampler.sample(ExactDenoiser(degradation, sampler.parameterization), x_T,
                            trajectory=True, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    for step in result.trajectory:
        t = torch.tensor([float(step.t)], dtype=torch.float64)
        a, s = degradation.alpha(t).item(), degradation.sigma(t).item()
        exact = a * MEAN + math.sqrt(a**2 * STD**2 + s**2) * z
        worst = max(worst, ((step.x_t - exact).abs().max() / math.sqrt(a**2 * STD**2 + s**2))
                    .item())
    return result.sample, MEAN + STD * z, worst


@pytest.mark.parametrize("name", FAMILY_SAMPLERS)
@pytest.mark.parametrize("member", ["flow", "edm", "vp_linear"])
def test_family_solver_converges_at_its_order(member, name):
    """The error of the visited states against the exact ODE path falls at the declared order
    over N = 10, 20, 40 (VP on the Karras grid: the schedule's own grid spends its first step
    on the cosine-like jump of λ near T, outside the asymptotic regime at these N)."""
    errors = {}
    fields = {"sigmas": "karras"} if member.startswith("vp") else {}
    for n in (10, 20, 40):
        sample, exact, path = exact_run(member, name, n, **fields)
        assert torch.isfinite(sample).all()
        errors[n] = path
    rate = math.log2(errors[10] / errors[40]) / 2
    order = type(build(member, name)).order
    assert order == {"euler": 1, "heun": 2, "dpmpp_2m": 2, "unipc": 2}[name]
    print(f"\n{member} {name}: path errors {errors}, rate {rate:.2f}")
    assert errors[40] < (0.25 if order == 1 else 0.05), errors
    assert rate >= order - 0.5, f"{member} {name}: rate {rate:.2f} < {order} - 0.5 ({errors})"


@pytest.mark.parametrize("member", ["flow", "edm"])
def test_stochastic_family_solvers_give_the_data_moments(member):
    for name, fields in (("dpmpp_2m_sde", {}), ("heun", {"S_churn": 20.0})):
        if member == "flow" and name == "heun":
            fields = {**fields, "S_tmax": 50.0}
        sampler = build(member, name, steps=100, **fields)
        degradation = sampler.degradation
        t_top = torch.tensor([sampler.timesteps()[0]], dtype=torch.float64)
        alpha, sigma = degradation.alpha(t_top).item(), degradation.sigma(t_top).item()
        z = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        x_T = alpha * MEAN + math.sqrt(alpha**2 * STD**2 + sigma**2) * z
        sample = sampler.sample(ExactDenoiser(degradation, sampler.parameterization), x_T,
                                generator=torch.Generator().manual_seed(1)).sample
        assert abs(sample.mean().item() - MEAN) < 0.03, (member, name, sample.mean())
        assert abs(sample.std().item() / STD - 1) < 0.05, (member, name, sample.std())


@pytest.mark.parametrize("member", ["flow", "edm"])
def test_ddim_steps_on_flow_and_edm(member):
    """DDIM on a continuous member: first order on the exact ODE (η = 0, its grid the
    member's own), the data's moments at η = 1."""
    errors = {n: exact_run(member, "ddim", n)[2] for n in (10, 20, 40)}
    rate = math.log2(errors[10] / errors[40]) / 2
    assert errors[40] < 0.25 and rate >= 0.5, errors
    sampler = build(member, "ddim", steps=10)
    assert sampler.timesteps() == build(member, "euler", steps=10).timesteps()
    sampler = build(member, "ddim", steps=400, eta=1.0)  # ancestral steps under-disperse
    degradation = sampler.degradation
    t_top = torch.tensor([sampler.timesteps()[0]], dtype=torch.float64)
    alpha, sigma = degradation.alpha(t_top).item(), degradation.sigma(t_top).item()
    z = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = alpha * MEAN + math.sqrt(alpha**2 * STD**2 + sigma**2) * z
    sample = sampler.sample(ExactDenoiser(degradation, sampler.parameterization), x_T,
                            generator=torch.Generator().manual_seed(1)).sample
    assert abs(sample.mean().item() - MEAN) < 0.03 and abs(sample.std().item() / STD - 1) < 0.05
    with pytest.raises((ValueError, ConfigError), match="continuous times"):
        build(member, "ddim", steps=10, spacing="leading")


# -- against diffusers, step by step -------------------------------------------------------------
class _Float64Torch:
    """torch with float32 meaning float64 (diffusers' DPM-Solver upcasts its state)."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def flow_network(x, t_in):
    """A fixed velocity 'network' of (x, 1000·t)."""
    return 0.9 * torch.tanh(x) + 0.1 * (t_in / 1000).to(x.dtype).reshape(-1, 1, 1, 1) * x - 0.2


def edm_network(x_in, c_noise):
    c = c_noise.to(x_in.dtype).view(-1, 1, 1, 1)
    return 0.7 * torch.tanh(x_in) + 0.2 * torch.cos(3 * c) * x_in - 0.1 * c


def _compare(ours, theirs):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, i=i: f"x_{i}: {m}")


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_flow_model_with_dpmpp_and_unipc_matches_diffusers(name, shift):
    """diffusers' DPMSolverMultistep / UniPCMultistep with use_flow_sigmas and
    prediction_type 'flow_prediction', given our flow grid (which starts at t = 1, where
    α = 0 and λ = −∞: both take a first-order step from it)."""
    steps = 12
    sampler = build("flow", name, steps=steps, shift=shift)
    grid = sampler.timesteps()
    assert grid[0] == 1.0
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = sampler.sample(flow_network, x_T, trajectory=True)
    common = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "solver_order": 2,
              "num_train_timesteps": 1000}
    if name == "dpmpp_2m":
        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
    else:
        scheduler = UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, **common)
    scheduler.set_timesteps(steps)
    scheduler.sigmas = torch.tensor([*grid, 0.0], dtype=torch.float64)
    scheduler.timesteps = torch.tensor(grid, dtype=torch.float64) * 1000
    scheduler.set_begin_index(0)
    x, states = x_T, [x_T]
    with mock.patch.object(dpm_module, "torch", _Float64Torch()):
        for timestep in scheduler.timesteps:
            x = scheduler.step(flow_network(x, timestep.reshape(1)), timestep, x).prev_sample
            states.append(x)
    _compare([s.x_t for s in result.trajectory] + [result.sample], states)


@pytest.mark.parametrize("steps", [8, 18])
def test_edm_model_with_dpmpp_matches_diffusers(steps):
    """diffusers' EDMDPMSolverMultistepScheduler (DPM-Solver++(2M) on EDM's Karras grid,
    preconditioning of Table 1) against our dpmpp_2m on the EDM degradation."""
    sampler = build("edm", "dpmpp_2m", steps=steps)
    grid = sampler.timesteps()
    x_T = 80 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    result = sampler.sample(edm_network, x_T, trajectory=True)
    scheduler = EDMDPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(scheduler.sigmas[:-1].double(),
                               torch.tensor(grid, dtype=torch.float64), rtol=1e-6, atol=0)
    scheduler.sigmas = torch.tensor([*grid, 0.0], dtype=torch.float64)
    scheduler.timesteps = scheduler.precondition_noise(scheduler.sigmas[:-1])
    scheduler.set_begin_index(0)
    x, states = x_T, [x_T]
    with mock.patch.object(edm_dpm_module, "torch", _Float64Torch()):
        for timestep in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, timestep)
            x = scheduler.step(edm_network(model_input, timestep.reshape(1)), timestep,
                               x).prev_sample
            states.append(x)
    _compare([s.x_t for s in result.trajectory] + [result.sample], states)


# -- the bugs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILY_SAMPLERS)
def test_zero_terminal_snr_schedules_sample(name):
    """Before: step_from_sigma(∞) was NaN and dpmpp_2m, unipc and euler failed with
    IndexError: index 9223372036854775807 when built on a zero-terminal-SNR schedule."""
    sampler = build("vp", name, schedule_fields={"rescale_zero_terminal_snr": True}, steps=10)
    alpha_bar = sampler.degradation.schedule.values()
    assert alpha_bar[-1] == 0
    grid = sampler.timesteps()
    assert grid[0] == 1000.0 and len(grid) == 10
    first = nodes(grid, sampler.degradation)[0]
    assert (first.alpha, first.sigma_vp, first.sigma, first.lam) == (0, 1, math.inf, -math.inf)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    result = sampler.sample(lambda x, t: 0.5 * torch.tanh(x), x_T)
    assert torch.isfinite(result.sample).all()
    exact = exact_run("vp", name, 20)
    assert torch.isfinite(exact[0]).all()


def test_step_from_sigma_at_infinity_is_the_last_step():
    degradation, _ = build("vp", schedule_fields={"rescale_zero_terminal_snr": True})
    alpha_bar = degradation.schedule.values()
    steps = step_from_sigma(torch.tensor([math.inf, 1.0], dtype=torch.float64), alpha_bar)
    assert steps[0].item() == 1000 and torch.isfinite(steps).all()
    assert solver_steps(alpha_bar, 10, multistep=True)[0] == 1000.0
    with pytest.raises(ValueError, match="karras.*finite"):
        solver_steps(alpha_bar, 10, "karras", multistep=True)


@pytest.mark.parametrize("name", ["edm_euler", "edm_heun", "dpmpp_2m", "unipc"])
def test_edm_samplers_use_the_schedules_rho(name):
    """Before: the EDM samplers' ρ defaulted to 7 whatever the schedule's ρ."""
    sampler = build("edm", name, schedule_fields={"rho": 3.0, "sigma_min": 0.01,
                                                  "sigma_max": 40.0}, steps=10)
    assert sampler.timesteps() == sigma_steps(10, 0.01, 40.0, 3.0)
    explicit = build("edm", name, schedule_fields={"rho": 3.0}, steps=10, rho=7.0)
    assert explicit.timesteps() == sigma_steps(10, 0.002, 80.0, 7.0)


@pytest.mark.parametrize("multistep", [True, False])
@pytest.mark.parametrize("count", [61, 7, 10, 333, 999])
def test_trailing_takes_exactly_n_steps(count, multistep):
    """Before: 'trailing' took one step too many for some N (61 at T = 1000)."""
    degradation, _ = build("vp")
    grid = solver_steps(degradation.schedule.values(), count, spacing="trailing",
                        multistep=multistep)
    assert len(grid) == count and grid[0] == 1000.0
    sampler = build("vp", "euler", steps=61, spacing="trailing")
    assert len(sampler.timesteps()) == 61 and sampler.nfe() == 61


def test_one_spacing_vocabulary():
    """Before: the solvers' grid config took 'linspace' | 'leading' | 'trailing' only, DDIM's
    also 'ddimN' and section counts: now both take the one vocabulary, and refuse the same
    way."""
    for spacing, steps in (("trailing", 10), ("ddim10", 10), ("4,3,3", 10)):
        TimeGridConfig(type="x", spacing=spacing, steps=steps)
        SolverGridConfig(type="x", spacing=spacing, steps=steps)
    messages = set()
    for cls in (TimeGridConfig, SolverGridConfig):
        with pytest.raises(ValueError, match="unknown spacing 'uniform'") as info:
            cls(type="x", spacing="uniform", steps=10)
        messages.add(str(info.value).split("\n")[1])
        with pytest.raises(ValueError, match="contradicts"):
            cls(type="x", spacing="ddim10", steps=20)
    assert len(messages) == 1
    sampler = build("vp", "dpmpp_2m", steps=10, spacing="ddim10")
    assert sampler.timesteps() == [float(t) for t in range(1000, 0, -100)][::1] or len(
        sampler.timesteps()) == 10


@pytest.mark.parametrize("member,fields,match", [
    ("flow", {"spacing": "trailing"}, "continuous times"),
    ("edm", {"shift": 3.0}, "shift"),
    ("flow", {"sigmas": "karras"}, "finite"),
])
def test_fields_without_meaning_for_the_member_are_refused(member, fields, match):
    with pytest.raises((ValueError, ConfigError), match=match):
        build(member, "dpmpp_2m", **fields)


RECIPES = __import__("pathlib").Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.parametrize("recipe", ["edm_digits.toml", "flow_digits.toml"])
@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_2m_sde", "unipc", "euler", "heun", "ddim"])
def test_recipes_take_family_solvers_on_flow_and_edm(recipe, name):
    loaded = corediff.load_recipe(RECIPES / recipe, [f"diffusion.sampler={{type='{name}'}}"])
    assert loaded.diffusion.sampler.type == name


def test_recipe_refuses_a_family_solver_outside_the_family_in_one_sentence():
    with pytest.raises(Exception, match=r"sampler 'dpmpp_2m' \[diffusion.sampler\] needs a "
                       r"degradation that provides 'gaussian_family', but degradation 'blur'"):
        corediff.load_recipe(RECIPES / "blur_afhq.toml", ["diffusion.sampler={type='dpmpp_2m'}"])


@pytest.mark.parametrize("recipe,sampler,sentence", [
    ("flow_digits.toml", "{type='dpmpp_2m', sigmas='karras'}",
     "sigmas = 'karras' needs a finite largest noise level"),
    ("flow_digits.toml", "{type='ddim', spacing='leading'}", "'flow' has continuous times"),
    ("edm_digits.toml", "{type='euler', shift=2.0}", "no meaning for degradation 'edm'"),
    ("quickstart.toml", "{type='unipc', steps=2000}", "solver steps repeat a step of T = 1000"),
])
def test_recipe_validation_refuses_a_grid_the_member_cannot_give(recipe, sampler, sentence):
    with pytest.raises(Exception, match=sentence):
        corediff.load_recipe(RECIPES / recipe, [f"diffusion.sampler={sampler}"])


@pytest.mark.parametrize("recipe", ["flow_digits.toml", "edm_digits.toml"])
@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_flow_and_edm_pipelines_sample_with_dpmpp_and_unipc(recipe, name):
    """A flow and an EDM pipeline (their recipes, untrained networks) sample end to end with
    DPM-Solver++(2M) and UniPC: the network is called at the member's times, nfe = N."""
    torch.manual_seed(0)
    loaded = corediff.load_recipe(RECIPES / recipe, [
        f"diffusion.sampler={{type='{name}', steps=4}}", "model.preset='tiny'"])
    pipeline = corediff.build(loaded)
    generated = pipeline.generate(2, seed=0)
    assert generated.images.shape[0] == 2 and torch.isfinite(generated.images).all()
    assert type(pipeline.sampler).__name__ == {"dpmpp_2m": "DPMSolverPP2MSampler",
                                               "unipc": "UniPCSampler"}[name]
    assert pipeline.sampler.nfe() == 4


def test_grids_start_where_the_prior_draws():
    """A VP Karras grid starts at T exactly (it began at 999.9999999999999 on the 'betas'
    schedule); an EDM grid with sigma_max below the degradation's t_max is entered from t_max,
    where the prior draws x (it used to start at sigma_max with x drawn at t_max)."""
    for schedule in ("betas", "linear", "cosine"):
        sched = corediff.create("schedule", schedule)
        degradation = corediff.create("degradation", "gaussian", schedule=sched)
        for multistep in (True, False):
            grid = solver_steps(sched.values(), 10, "karras", multistep=multistep)
            assert grid[0] == float(degradation.t_max) or not multistep
    sampler = build("edm", "edm_euler", steps=6, sigma_max=10.0)
    grid = sampler.timesteps()
    assert grid[0] == 80.0 and grid[1:] == sigma_steps(6, 0.002, 10.0, 7.0)
    assert sampler.nfe() == 7
