"""``edm_heun``: a preset of the family's Heun with churn (:mod:`corediff_plugins.samplers.heun`)
for EDM: Karras et al. 2022, Algorithm 2 (σ(t) = t, s(t) = 1) on the ρ-grid of eq. 5, 18 steps
by default, ρ the schedule's: at each σ_i, γ_i = min(S_churn/N, √2 − 1) if
S_tmin ≤ σ_i ≤ S_tmax else 0, σ̂ = (1 + γ_i)·σ_i, x̂ = x_i + sqrt(σ̂² − σ_i²)·S_noise·ε; an
Euler step from σ̂ to σ_{i+1}, then Heun's correction unless σ_{i+1} = 0. S_churn = 0 is the
deterministic Heun solver (Algorithm 1). Same arithmetic as before the family refactor:
samples bit for bit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corediff.config import StepCount
from corediff_plugins.samplers.heun import HeunSampler, HeunSamplerConfig


class EDMHeunSamplerConfig(HeunSamplerConfig):
    type: Literal["edm_heun"] = "edm_heun"
    steps: StepCount = Field(18, description="N, the noise levels visited (EDM: 18).")


class EDMHeunSampler(HeunSampler):
    """The family's Heun with churn on EDM's Karras grid."""

    Config = EDMHeunSamplerConfig
    requires = {"degradation": frozenset({"sigma_time"})}
