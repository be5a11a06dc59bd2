"""The DDPM / DDIM samplers' own work per step (everything but the network: x̂0, posterior,
noise) against one forward of the `unet` plugin's tiny preset (0.44 M parameters) on an
8×3×32×32 batch on CPU. Bar: the sampler adds < 5 % to a step."""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.models.unet import UNet
from corediff_plugins.parameterizations.eps import EpsParameterization
from corediff_plugins.samplers.ddim import DDIMSampler
from corediff_plugins.samplers.ddpm import DDPMSampler
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


@pytest.mark.parametrize("sampler_cls", [DDIMSampler, DDPMSampler])
def test_sampler_overhead(benchmark, sampler_cls):
    torch.manual_seed(0)
    degradation = GaussianDegradation(schedule=LinearSchedule())
    sampler = sampler_cls(sampler_cls.Config(steps=STEPS), degradation=degradation,
                          parameterization=EpsParameterization(degradation=degradation))
    x = torch.randn(SHAPE)
    output = torch.randn(SHAPE) * 0.1

    def zero_cost_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return output

    generator = torch.Generator().manual_seed(0)
    benchmark.pedantic(lambda: sampler.sample(zero_cost_model, x, generator=generator),
                       rounds=10, warmup_rounds=1)
    per_step = benchmark.stats.stats.median / STEPS
    forward = _forward_seconds(x)
    ratio = per_step / forward
    benchmark.extra_info.update(per_step_s=per_step, forward_s=forward, overhead_ratio=ratio)
    print(f"\n{sampler_cls.__name__}: {per_step * 1e6:.0f} µs/step vs net forward "
          f"{forward * 1e3:.2f} ms -> {100 * ratio:.2f} %")
    assert ratio < 0.05
