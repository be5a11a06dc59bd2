"""The conformance suite's late-order cases (tests/test_conformance.py LATE) are the method's,
not corediff's: on Gaussian data with the exact denoiser (corediff.testing_gaussian), diffusers'
DPMSolverMultistepScheduler / UniPCMultistepScheduler (prediction_type 'sample', fed the exact
x̂0) on the same σ grid from the same x_T reach the same sample, hence the same error against the
exact probability-flow ODE's x*(0), at N = 10, 20, 40 (0.147, 0.157, 0.038 data std for the
Karras grid on VP on the suite's x_T)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

import corediff
from corediff import testing_gaussian as exact

#: diffusers converts float64 tensors with np.array(..., copy=False).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SCHEDULERS = {"dpmpp_2m": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler}
#: case -> (schedule, degradation, parameterization, sampler fields, diffusers fields)
CASES = {
    "dpmpp_2m-vp-karras": ("linear", "gaussian", "eps", {"sigmas": "karras"},
                           {"use_karras_sigmas": True}),
    "dpmpp_2m-flow-shift2": ("flow", "flow", "velocity", {"shift": 2.0},
                             {"use_flow_sigmas": True, "flow_shift": 2.0}),
    "unipc-flow-shift2": ("flow", "flow", "velocity", {"shift": 2.0},
                          {"use_flow_sigmas": True, "flow_shift": 2.0}),
}


def _diffusers_sample(name: str, fields: dict, grid: list[float], x: torch.Tensor) -> torch.Tensor:
    """diffusers' multistep solver on σ grid ``grid`` (its own convention), x̂0 exact."""
    scheduler = SCHEDULERS[name](num_train_timesteps=1000, beta_schedule="linear",
                                 prediction_type="sample", **fields)
    scheduler.set_timesteps(len(grid))
    scheduler.sigmas = torch.tensor([*grid, 0.0], dtype=torch.float32)
    mean, std = exact.moments(x)
    for i, timestep in enumerate(scheduler.timesteps):
        alpha, sigma = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[i].double())
        x0 = mean + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (x - alpha * mean)
        x = scheduler.step(x0.float(), timestep, x.float()).prev_sample.double()
    return x


@pytest.mark.parametrize("case", sorted(CASES))
def test_late_order_errors_are_diffusers(case):
    schedule_type, degradation_type, param, ours, theirs = CASES[case]
    name = case.split("-")[0]
    schedule = corediff.create("schedule", schedule_type, **(
        {"steps": 1000} if schedule_type == "linear" else {}))
    degradation = corediff.create("degradation", degradation_type, schedule=schedule)
    built = {"degradation": degradation,
             "parameterization": corediff.create("parameterization", param,
                                                 degradation=degradation)}
    seed = int(torch.randint(0, 2**31, ()))
    for steps in (10, 20, 40):
        sampler = corediff.create("sampler", name, degradation=degradation,
                                  parameterization=built["parameterization"], steps=steps, **ours)
        times = sampler.timesteps()
        x_T = exact.start(degradation, times[0], 4, 8, seed=seed)
        nodes = sampler.nodes(times)[:-1]
        grid = [n.sigma_vp if degradation_type == "flow" else n.sigma for n in nodes]
        clean = exact.exact_path(degradation, x_T, times[0], 0)
        theirs_error = ((_diffusers_sample(name, theirs, grid, x_T) - clean) / exact.moments(
            x_T)[1]).abs().max().item()
        ours_error = exact.path_errors(sampler, built, x_T).final
        assert ours_error == pytest.approx(theirs_error, rel=1e-4), (
            f"{case}, N = {steps}, seed {seed}: corediff's error {ours_error:.6g}, diffusers' "
            f"{theirs_error:.6g} data std")
