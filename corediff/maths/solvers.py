"""σ-space grids shared by the fast Gaussian ODE/SDE solvers (DPM-Solver++, UniPC, Euler,
Heun), public and documented.

A fast solver walks a variance-preserving model along a few noise levels
σ = sqrt((1 − ᾱ)/ᾱ), the level of x/α = x0 + σ·ε (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", §2; k-diffusion). Each level is a fractional step
t ∈ [1, T] of the schedule (:func:`corediff.maths.gaussian.step_from_sigma`, log-σ interpolation
between integer steps), which is where the model is evaluated, so a model trained on integer
steps takes these solvers as it is; the last move goes to t = 0 (σ = 0, the sample is x̂0).

* :func:`diffusers_timesteps`: diffusers' timesteps τ for its ``timestep_spacing``, as its
  multistep schedulers (DPMSolverMultistep, UniPCMultistep) or its Euler / Heun discrete
  schedulers build them (the two families differ);
* :func:`solver_steps`: the fractional steps a solver visits for the schedule's own σ at those
  timesteps (diffusers' default, σ linear in τ between integer steps) or Karras et al.'s
  ρ-grid (``use_karras_sigmas=True``); diffusers' timestep τ is corediff's step τ + 1;
* :func:`nodes`: per visited step, plus the final t = 0, the float64 quantities solver
  coefficients are made of: σ, α = sqrt(ᾱ), σ_vp = sqrt(1 − ᾱ), λ = log(α/σ_vp) = −log σ;
* :class:`SolverGridConfig` and :class:`GridSolver`: the config fields (``steps``, ``sigmas``,
  ``spacing``) and ``timesteps`` the four first-party solvers share; a third-party solver
  derives from them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.maths.gaussian import karras_sigmas, sigma_at_step, step_from_sigma, ve_sigma
from corediff.interfaces import Sampler


@dataclass(frozen=True)
class Node:
    """One visited noise level: the step t (fractional; 0 = clean), σ = sqrt((1 − ᾱ)/ᾱ),
    α = sqrt(ᾱ) = 1/sqrt(1 + σ²), σ_vp = sqrt(1 − ᾱ) = σ·α and λ = log(α/σ_vp) (inf at t = 0)."""

    t: float
    sigma: float
    alpha: float
    sigma_vp: float
    lam: float


def diffusers_timesteps(steps: int, count: int, spacing: str, *, multistep: bool) -> np.ndarray:
    """diffusers' timesteps τ (0-based, descending, float64) for ``timestep_spacing``
    ("linspace" | "leading" | "trailing", steps_offset = 0) with T = ``steps``.

    ``multistep``: DPMSolverMultistep / UniPCMultistep (N + 1 points with the last dropped,
    rounded to integers); otherwise Euler / Heun discrete (N points, "linspace" fractional)."""
    n = count
    if spacing == "trailing":
        return np.arange(steps, 0, -steps / n).round() - 1.0
    if multistep:
        if spacing == "linspace":
            return np.linspace(0, steps - 1, n + 1).round()[::-1][:-1].astype(np.float64)
        return (np.arange(0, n + 1) * (steps // (n + 1))).round()[::-1][:-1].astype(np.float64)
    if spacing == "linspace":
        return np.linspace(0, steps - 1, n, dtype=np.float32)[::-1].astype(np.float64)
    return (np.arange(0, n) * (steps // n)).round()[::-1].astype(np.float64)


def solver_steps(
    alpha_bar: Tensor,
    count: int,
    sigmas: str = "schedule",
    spacing: str = "linspace",
    *,
    multistep: bool,
    start: int | float | None = None,
) -> list[float]:
    """The fractional steps (descending floats in [1, T]) a solver visits.

    ``sigmas`` "schedule": σ at diffusers' timesteps τ (:func:`diffusers_timesteps`), σ linear
    in τ between integer steps as diffusers interpolates; "karras": Karras et al.'s eq. 5 grid
    of ``count`` levels (ρ = 7) between the ends of the schedule's σ (``multistep``) or of the
    spaced σ (Euler / Heun), as diffusers' ``use_karras_sigmas``. Each σ becomes the step
    :func:`corediff.maths.gaussian.step_from_sigma` gives (τ + 1 exactly at integer τ). An explicit
    ``start`` is visited first, then the grid's steps below it.
    """
    steps = len(alpha_bar) - 1
    tau = diffusers_timesteps(steps, count, spacing, multistep=multistep)
    table = ve_sigma(alpha_bar.double()[1:]).numpy()
    sigma = np.interp(tau, np.arange(steps), table)
    if sigmas == "karras":
        low, high = (table[0], table[-1]) if multistep else (sigma[-1], sigma[0])
        sigma = karras_sigmas(count, float(low), float(high)).numpy()
    grid = step_from_sigma(torch.from_numpy(np.ascontiguousarray(sigma)), alpha_bar).tolist()
    if any(a <= b for a, b in zip(grid, grid[1:], strict=False)):
        raise ValueError(f"{count} '{spacing}' solver steps repeat a step of T = {steps}")
    if start is None:
        return grid
    if not 0 < start <= steps:
        raise ValueError(f"start must lie in (0, {steps}], got {start}")
    return [float(start)] + [t for t in grid if t < start]


def nodes(steps: list[float], alpha_bar: Tensor) -> list[Node]:
    """A :class:`Node` per visited step, then the final one at t = 0 (σ = 0)."""
    t = torch.tensor([*steps, 0.0], dtype=torch.float64)
    sigma = sigma_at_step(t, alpha_bar)
    alpha = (1 + sigma.square()).rsqrt()
    sigma_vp = torch.where(sigma.isinf(), 1.0, sigma * alpha)
    columns = (t, sigma, alpha, sigma_vp, -sigma.log())
    return [Node(*row) for row in zip(*(c.tolist() for c in columns), strict=True)]


class SolverGridConfig(ComponentConfig):
    """Config fields of a σ-space solver: derive a solver's Config from it."""

    steps: StepCount = Field(20, description="Solver steps N (visited noise levels).")
    sigmas: Literal["schedule", "karras"] = Field(
        "schedule",
        description="'schedule': the schedule's σ at the spaced timesteps (diffusers' default); "
        "'karras': Karras et al. 2022's ρ = 7 grid (diffusers' use_karras_sigmas).",
    )
    spacing: Literal["linspace", "leading", "trailing"] = Field(
        "linspace", description="diffusers' timestep_spacing of the 'schedule' grid."
    )


class GridSolver(Sampler):
    """A Gaussian sampler visiting :func:`solver_steps` for its config (``multistep``: the
    DPM-Solver / UniPC family's grid, else Euler / Heun's). :meth:`nodes` gives the plan's
    float64 quantities."""

    requires = {"degradation": frozenset({"gaussian"})}
    multistep: ClassVar[bool] = True

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.timesteps()  # refuse a grid the schedule cannot give when the sampler is built

    def timesteps(self, start: int | float | None = None) -> list[float]:
        return solver_steps(self.degradation.schedule.values(), self.config.steps,
                            self.config.sigmas, self.config.spacing, multistep=self.multistep,
                            start=start)

    def nodes(self, steps: list[float]) -> list[Node]:
        """The visited steps' nodes and the final t = 0 one (see :func:`nodes`)."""
        return nodes(steps, self.degradation.schedule.values())
