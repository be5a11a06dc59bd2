"""Cold Diffusion's improved sampler with the noise held fixed (Bansal et al. 2022, "Cold
Diffusion", §3.2, Algorithm 2; the Gaussian "x0_step_down" routine of its code, ``gen_sample``,
as in the SVD notes: ``x2_bar = noise``, the noise of the start, for every step):

    for s = start..1:  x̂0 = R(x_s, s);  x_{s−1} = x_s − D(x̂0, s, z) + D(x̂0, s − 1, z)

with one z for the whole run, fixed at the first step as the noise of the starting point,
z = estimate_noise(x_start, x̂0_start, start) (for the Gaussian degradation
(x_T − sqrt(ᾱ_T)·x̂0) / sqrt(1 − ᾱ_T)). Where ᾱ_T = 0 that is x_T itself — the code's
``noise = img``, the random input — and it is ≈ x_T where ᾱ_T ≈ 0; unlike x_T it is also the
noise of a start below T or of a start that is not pure noise, so the true-x0 restoration
returns x0 exactly. ``cold_improved`` instead re-estimates the noise at every step
(DDIM with η = 0). With ``steps`` set, "s − 1" is the next visited step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Denoise, Step
from corediff_plugins.samplers.cold_improved import ColdImprovedSampler


class ColdFixedNoiseConfig(ComponentConfig):
    type: Literal["cold_fixed_noise"] = "cold_fixed_noise"
    steps: StepCount | None = Field(
        None, description="Visited steps, evenly spaced from the start to 1 (None: every step)."
    )


class ColdFixedNoiseSampler(ColdImprovedSampler):
    """Algorithm 2 with every D term using the noise z estimated at the first step."""

    Config = ColdFixedNoiseConfig
    requires = {"degradation": frozenset({"stochastic"})}

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        x0_hat = denoise(x, step.t).x0
        s = step.t_tensor(x)
        if step.index == 0:
            step.state["z"] = self.degradation.estimate_noise(x, x0_hat, s)
        return self.update(x, x0_hat, s, step.t_next_tensor(x), step.state["z"]), x0_hat
