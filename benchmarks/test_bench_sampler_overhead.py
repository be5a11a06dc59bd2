"""The samplers' own work per step (everything but the network: x̂0, posterior, noise, solver
updates) against one forward of the `unet` plugin's tiny preset (0.44 M parameters) on an
8×3×32×32 batch on CPU: DDPM, DDIM and the fast solvers (DPM-Solver++(2M) ODE and SDE, UniPC,
Euler, Heun, whose step makes two evaluations and is still held to one forward), and the
continuous-time samplers of flow matching (Euler, Heun) and EDM (Euler, Heun's Algorithm 2
with churn) on their own degradations. Bar: the sampler adds < 5 % to a step."""

from __future__ import annotations

import statistics
import time

import pytest
import torch

import corediff
from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.models.unet import UNet
from corediff_plugins.parameterizations.eps import EpsParameterization
from corediff_plugins.samplers.ddim import DDIMSampler
from corediff_plugins.samplers.ddpm import DDPMSampler
from corediff_plugins.samplers.dpmpp_2m import DPMSolverPP2MSampler
from corediff_plugins.samplers.euler import EulerSampler
from corediff_plugins.samplers.heun import HeunSampler
from corediff_plugins.samplers.unipc import UniPCSampler
from corediff_plugins.schedules.linear import LinearSchedule

STEPS = 50
SHAPE = (8, 3, 32, 32)


def _forward_seconds(x: torch.Tensor) -> float:
    net = UNet(UNet.Config(preset="tiny"), in_channels=3, out_channels=3, image_size=32).eval()
    t = torch.full((x.shape[0],), 500)
    with torch.no_grad():
        net(x, t)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            net(x, t)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


#: name -> (schedule, degradation, parameterization, sampler options) of a continuous sampler
CONTINUOUS = {
    "flow_euler": ("flow", "flow", "velocity", {}),
    "flow_heun": ("flow", "flow", "velocity", {}),
    "edm_euler": ("edm", "edm", "edm", {}),
    "edm_heun": ("edm", "edm", "edm", {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0}),
}


def _continuous(name: str):
    schedule, degradation, parameterization, options = CONTINUOUS[name]
    built = corediff.create("degradation", degradation,
                            schedule=corediff.create("schedule", schedule))
    param = corediff.create("parameterization", parameterization, degradation=built)
    return corediff.create("sampler", name, degradation=built, parameterization=param,
                           steps=STEPS, **options)


@pytest.mark.parametrize(("sampler_cls", "options"), [
    (DDIMSampler, {}), (DDPMSampler, {}), (DPMSolverPP2MSampler, {}),
    (DPMSolverPP2MSampler, {"sde": True}), (UniPCSampler, {}), (EulerSampler, {}),
    (HeunSampler, {}), *[(name, {}) for name in CONTINUOUS],
], ids=["ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde", "unipc", "euler", "heun", *CONTINUOUS])
def test_sampler_overhead(benchmark, sampler_cls, options):
    torch.manual_seed(0)
    if isinstance(sampler_cls, str):
        sampler = _continuous(sampler_cls)
    else:
        degradation = GaussianDegradation(schedule=LinearSchedule())
        sampler = sampler_cls(sampler_cls.Config(steps=STEPS, **options),
                              degradation=degradation,
                              parameterization=EpsParameterization(degradation=degradation))
    x = torch.randn(SHAPE)
    output = torch.randn(SHAPE) * 0.1

    def zero_cost_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return output

    generator = torch.Generator().manual_seed(0)
    benchmark.pedantic(lambda: sampler.sample(zero_cost_model, x, generator=generator),
                       rounds=10, warmup_rounds=1)
    per_step = benchmark.stats.stats.median / len(sampler.timesteps())
    forward = _forward_seconds(x)
    ratio = per_step / forward
    benchmark.extra_info.update(per_step_s=per_step, forward_s=forward, overhead_ratio=ratio)
    print(f"\n{type(sampler).__name__}{options or ''}: {per_step * 1e6:.0f} µs/step vs net "
          f"forward {forward * 1e3:.2f} ms -> {100 * ratio:.2f} %")
    assert ratio < 0.05
