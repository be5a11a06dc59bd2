"""The fast Gaussian solvers (dpmpp_2m, unipc, euler, heun) and corediff.maths.solvers against
diffusers' DPMSolverMultistep / UniPCMultistep / EulerDiscrete / HeunDiscrete schedulers, step
by step, with the same analytic network, the same x_T and the same noise.

diffusers gets our ᾱ (float64) before set_timesteps. The network is a function of diffusers'
timestep τ; ours calls it at τ = t − 1 of its fractional step t, diffusers at its own
``_sigma_to_t`` of the σ it steps from (its DPM / UniPC round Karras timesteps for the network,
and its Euler / Heun "linspace" grid interpolates σ linearly in τ: the steps we visit are the
fractional steps of exactly diffusers' σ, within 0.5 and 0.003 steps of its listed τ + 1).
diffusers' Euler and Heun state is x/α (what its scale_model_input undoes): compared as
x = x_ve / sqrt(1 + σ²).

Float64 runs give diffusers float64: its σ grid as float64 (equal to its float32 one to 1e-6,
checked) and its Euler and DPM-Solver steps without their float32 upcast. In float32, x/α at
the cosine schedule's σ_max ≈ 2·10⁴ loses ~1e-3 to rounding, which x̂0 = x/α − σ·ε̂ inherits:
a float32 reference could not check anything to 1e-5 there."""

from __future__ import annotations

import math
from unittest import mock

import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm_module
import diffusers.schedulers.scheduling_euler_discrete as euler_module
import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from corediff.denoiser import Denoiser
from corediff.maths.gaussian import GaussianTables, sigma_at_step, step_from_sigma, ve_sigma
from corediff.maths.solvers import nodes, solver_steps
from corediff.testing import oracle
from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.models.unet import UNet
from corediff_plugins.parameterizations.eps import EpsParameterization
from corediff_plugins.parameterizations.v import VParameterization
from corediff_plugins.samplers.dpmpp_2m import DPMSolverPP2MSampler
from corediff_plugins.samplers.euler import EulerSampler
from corediff_plugins.samplers.heun import HeunSampler
from corediff_plugins.samplers.unipc import UniPCSampler
from corediff_plugins.schedules.cosine import CosineSchedule
from corediff_plugins.schedules.linear import LinearSchedule

T = 1000
SHAPE = (2, 3, 8, 8)
DEGRADATIONS = {name: GaussianDegradation(schedule=cls())
                for name, cls in (("linear", LinearSchedule), ("cosine", CosineSchedule))}
PARAMS = {"eps": (EpsParameterization, "epsilon"), "v": (VParameterization, "v_prediction")}
SAMPLERS = {"dpmpp_2m": DPMSolverPP2MSampler, "unipc": UniPCSampler, "euler": EulerSampler,
            "heun": HeunSampler}
#: Largest difference seen per solver and dtype (printed with -s, for the record).
MAX_DIFF: dict[str, float] = {}
#: diffusers converts our float64 ᾱ tensor with np.array(..., copy=False).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def analytic(alpha_bar: torch.Tensor, param: str):
    """network(x, τ): the optimal ε or v for data N(0.2, 0.5²) per pixel at diffusers'
    timestep τ (σ log-interpolated), plus a smooth τ-dependent wobble."""

    def network(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        tau = torch.as_tensor(tau, dtype=torch.float64).expand(x.shape[0])
        sigma = sigma_at_step(tau + 1, alpha_bar)
        alpha = (1 + sigma.square()).rsqrt()
        alpha, s = (v.to(x.dtype).view(-1, 1, 1, 1) for v in (alpha, sigma * alpha))
        x0 = 0.2 + 0.25 * alpha * (x - 0.2 * alpha) / (0.25 * alpha**2 + s**2)
        eps = (x - alpha * x0) / s
        out = eps if param == "eps" else alpha * eps - s * x0
        return out + 0.01 * torch.cos(tau / 100).to(x.dtype).view(-1, 1, 1, 1) * torch.tanh(x)

    return network


def _x_T(dtype=torch.float64) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _build(name: str, schedule: str, param: str, **config):
    degradation = DEGRADATIONS[schedule]
    cls = SAMPLERS[name]
    parameterization = PARAMS[param][0](degradation=degradation)
    sampler = cls(cls.Config(**config), degradation=degradation, parameterization=parameterization)
    return sampler, degradation.schedule.values()


def _scheduler(name: str, alpha_bar: torch.Tensor, param: str, karras: bool, count: int,
               spacing: str = "linspace", sde: bool = False):
    common = {"prediction_type": PARAMS[param][1], "use_karras_sigmas": karras,
              "timestep_spacing": spacing}
    if name == "dpmpp_2m":
        algorithm = "sde-dpmsolver++" if sde else "dpmsolver++"
        scheduler = DPMSolverMultistepScheduler(algorithm_type=algorithm, solver_order=2,
                                                **common)
    elif name == "unipc":
        scheduler = UniPCMultistepScheduler(solver_type="bh2", solver_order=2, predict_x0=True,
                                            **common)
    else:
        scheduler = {"euler": EulerDiscreteScheduler, "heun": HeunDiscreteScheduler}[name](
            **common)
    scheduler.alphas_cumprod = alpha_bar[1:].clone()
    scheduler.set_timesteps(count)
    scheduler.set_begin_index(0)  # repeated rounded timesteps must not skip the first σ
    return scheduler


class _Float64Torch:
    """torch with float32 meaning float64, for diffusers' Euler and DPM-Solver steps (they
    upcast the state to float32)."""

    float32 = torch.float64

    def __getattr__(self, name: str):
        return getattr(torch, name)


def _float64_sigmas(name, scheduler, sampler) -> None:
    """Give diffusers our float64 σ grid (its own, to float32 rounding)."""
    grid = torch.tensor([node.sigma for node in sampler.nodes(sampler.timesteps())],
                        dtype=torch.float64)
    if name == "heun":
        grid = torch.cat([grid[:1], grid[1:-1].repeat_interleave(2), grid[-1:]])
    torch.testing.assert_close(grid, scheduler.sigmas.double(), rtol=1e-6, atol=0)
    scheduler.sigmas = grid


def _diffusers_run(name, scheduler, network, alpha_bar, x_T, noises):
    """diffusers' states at each of our steps (VP x), and its listed timesteps."""
    module = {"euler": euler_module, "dpmpp_2m": dpm_module}.get(name)
    if module is not None and x_T.dtype == torch.float64:
        with mock.patch.object(module, "torch", _Float64Torch()):
            return _diffusers_run(f"{name} ", scheduler, network, alpha_bar, x_T, noises)
    name = name.strip()
    log_sigmas = np.log(ve_sigma(alpha_bar[1:]).numpy())
    sigmas = scheduler.sigmas.double()
    listed = scheduler.timesteps.tolist()
    ve = name in ("euler", "heun")
    x = x_T * (1 + sigmas[0] ** 2).sqrt() if ve else x_T
    states = [x_T]
    for j, k in enumerate(listed):
        sigma = sigmas[j]
        tau = torch.tensor(scheduler._sigma_to_t(np.array(sigma.item()), log_sigmas))
        if ve:
            output = network(scheduler.scale_model_input(x, k), tau)
            x = scheduler.step(output, k, x).prev_sample
        elif name == "dpmpp_2m":
            x = scheduler.step(network(x, tau), k, x, variance_noise=noises[j]).prev_sample
        else:
            x = scheduler.step(network(x, tau), k, x).prev_sample
        if name != "heun" or j % 2 == 1 or j == len(listed) - 1:
            after = sigmas[j + 1] if name != "heun" or j == len(listed) - 1 else sigma
            states.append(x / (1 + after**2).sqrt() if ve else x)
    return states, listed


def _compare(name, sampler, alpha_bar, param, karras, count, dtype=torch.float64,
             spacing="linspace", sde=False):
    network = analytic(alpha_bar, param)
    result = sampler.sample(lambda x, t: network(x, t - 1), _x_T(dtype), trajectory=True,
                            generator=torch.Generator().manual_seed(1))
    replay = torch.Generator().manual_seed(1)
    noises = [torch.randn(SHAPE, generator=replay, dtype=dtype) if sde else None
              for _ in range(count - 1)] + [torch.zeros(SHAPE, dtype=dtype)]
    scheduler = _scheduler(name, alpha_bar, param, karras, count, spacing, sde)
    if dtype == torch.float64:
        _float64_sigmas(name, scheduler, sampler)
    states, listed = _diffusers_run(name, scheduler, network, alpha_bar, _x_T(dtype), noises)
    ours_t = sampler.timesteps()
    if name == "heun":
        listed = listed[::2]
    assert [step.t for step in result.trajectory] == ours_t and len(ours_t) == len(listed)
    gap = 0.5 if karras and name in ("dpmpp_2m", "unipc") else 3e-3
    assert max(abs(t - 1 - k) for t, k in zip(ours_t, listed, strict=True)) <= gap
    if not karras and (spacing != "linspace" or name in ("dpmpp_2m", "unipc")):
        assert ours_t == [k + 1.0 for k in listed]  # integer grids: diffusers' τ + 1 exactly
    ours = [step.x_t for step in result.trajectory] + [result.sample]
    assert len(ours) == len(states)
    worst = max((a - b.to(a.dtype)).abs().max().item() for a, b in zip(ours, states, strict=True))
    key = f"{name} {str(dtype).removeprefix('torch.')}"
    MAX_DIFF[key] = max(MAX_DIFF.get(key, 0.0), worst)
    print(f"\n{name} {count} karras={karras} {param} {dtype}: max |Δx| {worst:.2e}")
    for a, b in zip(ours, states, strict=True):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-5, atol=1e-5)
    assert result.nfe == sampler.nfe()


@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("param", ["eps", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("count", [5, 10, 25])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_matches_diffusers(name, count, schedule, param, karras):
    sigmas = "karras" if karras else "schedule"
    sampler, alpha_bar = _build(name, schedule, param, steps=count, sigmas=sigmas)
    _compare(name, sampler, alpha_bar, param, karras, count)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_matches_diffusers_other_spacings_and_float32(name, spacing):
    sampler, alpha_bar = _build(name, "linear", "eps", steps=10, spacing=spacing)
    _compare(name, sampler, alpha_bar, "eps", False, 10, spacing=spacing)
    sampler, alpha_bar = _build(name, "cosine", "v", steps=25, sigmas="karras")
    _compare(name, sampler, alpha_bar, "v", True, 25, dtype=torch.float32)


@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("count", [5, 25])
def test_dpmpp_2m_sde_matches_diffusers(count, karras):
    sampler, alpha_bar = _build("dpmpp_2m", "cosine", "v", steps=count, sde=True,
                                sigmas="karras" if karras else "schedule")
    _compare("dpmpp_2m", sampler, alpha_bar, "v", karras, count, sde=True)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_is_exact(name):
    sampler, alpha_bar = _build(name, "linear", "eps", steps=7)
    calls = []

    def network(x, t):
        calls.append(t)
        assert t.dtype == torch.float64
        return torch.tanh(x)

    for start in (None, 600, 412.5):
        calls.clear()
        result = sampler.sample(network, _x_T(), start=start)
        assert result.nfe == sampler.nfe(start) == len(calls)
        visited = sampler.timesteps(start)
        assert visited[0] == (T if start is None else start)
        assert all(isinstance(t, float) for t in visited)
    assert sampler.nfe() == (13 if name == "heun" else 7)


@pytest.mark.parametrize("sigmas", ["schedule", "karras"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_true_x0_oracle_follows_the_exact_ode(name, sigmas):
    # One image: x̂0 = x0 at every (x, t), so the probability-flow ODE's solution is
    # x_t = α_t·x0 + σ_t·ε with ε fixed; data-prediction solvers (and Euler / Heun in σ) are
    # exact on it, and the last move returns x̂0 = x0 itself.
    sampler, alpha_bar = _build(name, "cosine", "v", steps=25, sigmas=sigmas)
    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    path = nodes(sampler.timesteps(), alpha_bar)
    x_T = path[0].alpha * x0 + path[0].sigma_vp * eps
    built = {"parameterization": sampler.parameterization, "degradation": sampler.degradation}
    result = sampler.sample(oracle(built, x0), x_T, trajectory=True)
    torch.testing.assert_close(result.sample, x0, rtol=0, atol=1e-6)
    for step, node in zip(result.trajectory, path, strict=False):
        torch.testing.assert_close(step.x_t, node.alpha * x0 + node.sigma_vp * eps,
                                   rtol=0, atol=1e-6)


def test_float_steps_equal_integer_steps():
    torch.manual_seed(0)
    degradation = DEGRADATIONS["cosine"]
    net = UNet(UNet.Config(preset="tiny"), in_channels=3, out_channels=3, image_size=8).eval()
    x = torch.randn(SHAPE)
    tables = GaussianTables(degradation.schedule.values())
    steps = torch.tensor([1, 2, 500, 999, T])
    for name in ("alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus", "snr"):
        torch.testing.assert_close(tables.at(name, steps.double()), tables.at(name, steps),
                                   rtol=1e-12, atol=0)
    for cls, _ in PARAMS.values():
        denoise = Denoiser(net, cls(degradation=degradation))
        with torch.no_grad():
            for t in (1, 500, T):
                a, b = denoise(x, float(t)), denoise(x, t)
                torch.testing.assert_close(a.x0, b.x0, rtol=1e-6, atol=1e-6)
                torch.testing.assert_close(a.eps, b.eps, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_step_from_sigma_agrees_with_diffusers_sigma_to_t(schedule):
    alpha_bar = DEGRADATIONS[schedule].schedule.values()
    log_sigmas = np.log(ve_sigma(alpha_bar[1:]).numpy())
    scheduler = EulerDiscreteScheduler(use_karras_sigmas=True)
    scheduler.alphas_cumprod = alpha_bar[1:].clone()
    low, high = math.exp(log_sigmas[0]), math.exp(log_sigmas[-1])
    sigma = torch.cat([torch.logspace(math.log10(low), math.log10(high), 301,
                                      dtype=torch.float64),
                       torch.tensor(log_sigmas[[0, 1, 500, -2, -1]]).exp()])
    theirs = torch.from_numpy(scheduler._sigma_to_t(sigma.numpy(), log_sigmas))
    ours = step_from_sigma(sigma, alpha_bar)
    torch.testing.assert_close(ours - 1, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(sigma_at_step(theirs + 1, alpha_bar), sigma, rtol=1e-6, atol=0)


def test_solver_grids():
    alpha_bar = DEGRADATIONS["linear"].schedule.values()
    dpm = _scheduler("dpmpp_2m", alpha_bar, "eps", False, 20)
    assert solver_steps(alpha_bar, 20, multistep=True) == [k + 1.0 for k in dpm.timesteps]
    for multistep, name in ((True, "unipc"), (False, "euler")):
        scheduler = _scheduler(name, alpha_bar, "eps", True, 12)
        grid = nodes(solver_steps(alpha_bar, 12, "karras", multistep=multistep), alpha_bar)
        torch.testing.assert_close(torch.tensor([n.sigma for n in grid], dtype=torch.float64),
                                   scheduler.sigmas.double(), rtol=1e-6, atol=0)
    last = nodes([T], alpha_bar)[-1]
    assert (last.t, last.sigma, last.alpha, last.sigma_vp, last.lam) == (0, 0, 1, 0, math.inf)
    assert solver_steps(alpha_bar, 5, multistep=False, start=700)[0] == 700.0
    assert solver_steps(alpha_bar, 5, multistep=False, start=700)[1:] == [
        t for t in solver_steps(alpha_bar, 5, multistep=False) if t < 700]
    with pytest.raises(ValueError, match="repeat"):
        solver_steps(DEGRADATIONS["linear"].schedule.values()[:11], 30, multistep=True)
    with pytest.raises(ValueError, match="start"):
        solver_steps(alpha_bar, 5, multistep=True, start=1001)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    from pathlib import Path

    from corediff.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("fast_solvers") / "run"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    overrides = ["train.steps=30", "train.batch_size=8", "train.checkpoint_every=30",
                 "train.log_every=10", "train.warmup_steps=2", "data.image_size=8",
                 "sample.n=2", "sample.batch_size=2", "diffusion.sampler.steps=3",
                 "run.device='cpu'"]
    assert main(["train", str(recipe), "--run-dir", str(run),
                 *[a for o in overrides for a in ("--set", o)]]) == 0
    yield run
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_integer_step_model_samples_through_each_solver(quickstart_run, name, tmp_path):
    from corediff.api import load
    from corediff.cli import main

    out = tmp_path / f"{name}.png"
    assert main(["sample", str(quickstart_run), "--n", "2", "--out", str(out), "--set",
                 f"diffusion.sampler.type='{name}'", "--set", "diffusion.sampler.steps=6"]) == 0
    assert out.is_file()
    pipeline = load(quickstart_run, overrides=[f"diffusion.sampler.type='{name}'"])
    assert type(pipeline.sampler) is SAMPLERS[name] and pipeline.sampler.config.steps == 3
    images = pipeline.sample(2)
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_print_max_differences():
    print("\nmax |Δx| vs diffusers:", {k: f"{v:.2e}" for k, v in MAX_DIFF.items()})
