"""``edm_euler``: a preset of the family's Euler (:mod:`corediff_plugins.samplers.euler`) for
EDM: Karras et al. 2022, eq. 1 with s(t) = 1, σ(t) = t (dx/dσ = (x − D(x; σ))/σ) on the ρ-grid
of eq. 5 (σ_0 = σ_max > … > σ_{N−1} = σ_min, σ_N = 0), 18 steps by default, ρ the schedule's:
x_{i+1} = x_i + (σ_{i+1} − σ_i)·(x_i − D(x_i; σ_i))/σ_i (diffusers' EDMEulerScheduler with
s_churn = 0). Same arithmetic as before the family refactor: samples bit for bit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corediff.config import StepCount
from corediff_plugins.samplers.euler import EulerSampler, EulerSamplerConfig


class EDMEulerSamplerConfig(EulerSamplerConfig):
    type: Literal["edm_euler"] = "edm_euler"
    steps: StepCount = Field(18, description="N, the noise levels visited (EDM: 18).")


class EDMEulerSampler(EulerSampler):
    """The family's Euler on EDM's Karras grid."""

    Config = EDMEulerSamplerConfig
    requires = {"degradation": frozenset({"sigma_time"})}
