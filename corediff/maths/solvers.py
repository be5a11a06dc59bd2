"""Grids and nodes of the σ-space ODE/SDE solvers (DPM-Solver++, UniPC, Euler, Heun, DDIM)
on any member of the Gaussian family x_t = α(t)·x0 + σ(t)·ε (:mod:`corediff.maths.family`:
VP, flow matching, EDM), public and documented.

A solver walks a few times t of the member and is written in the float64 quantities of each
(:class:`Node`): Karras's noise level σ/α (the level of x/α = x0 + (σ/α)·ε; Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", §2), α, σ and
λ = log(α/σ); the last move goes to t = 0 (σ = 0, the sample is x̂0). On a VP schedule the
times are fractional steps t ∈ [1, T] (:func:`corediff.maths.gaussian.step_from_sigma`, log-σ
interpolation between integer steps), so a model trained on integer steps takes these solvers
as it is.

* :func:`diffusers_timesteps`: diffusers' timesteps τ for its ``timestep_spacing``, as its
  multistep schedulers (DPMSolverMultistep, UniPCMultistep) or its Euler / Heun discrete
  schedulers build them (the two families differ);
* :func:`solver_steps`: the fractional steps a solver visits on a VP schedule for the
  schedule's own σ at those timesteps (diffusers' default, σ linear in τ between integer steps)
  or Karras et al.'s ρ-grid (``use_karras_sigmas=True``); diffusers' timestep τ is corediff's
  step τ + 1;
* :func:`family_steps`: the times on any member (VP as above, flow's grid with SD3's shift,
  EDM's Karras grid with the schedule's ρ);
* :func:`nodes`: per visited time, plus the final t = 0, the :class:`Node` quantities;
* :class:`SolverGridConfig` and :class:`GridSolver`: the one grid config (``steps``,
  ``sigmas``, ``spacing``, ``rho``, ``sigma_min``, ``sigma_max``, ``shift``) and ``timesteps``
  the first-party family solvers share; a third-party solver derives from them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor

from corediff.config import ComponentConfig, StepCount
from corediff.interfaces import Sampler
from corediff.maths.gaussian import karras_sigmas, sigma_at_step, step_from_sigma, ve_sigma
from corediff.maths.timesteps import (
    SPACINGS,
    Spacing,
    check_spacing_steps,
    space_timesteps,
    visit_from,
)


@dataclass(frozen=True)
class Node:
    """One visited time of a member of the Gaussian family: t (0 = clean), ``sigma`` = σ/α
    (Karras's noise level; for VP sqrt((1 − ᾱ)/ᾱ)), ``alpha`` = α, ``sigma_vp`` = σ (the
    member's noise coefficient; for VP sqrt(1 − ᾱ), hence the name) and ``lam`` =
    λ = log(α/σ) (+∞ at t = 0, −∞ where α = 0)."""

    t: float
    sigma: float
    alpha: float
    sigma_vp: float
    lam: float


def diffusers_timesteps(steps: int, count: int, spacing: str, *, multistep: bool) -> np.ndarray:
    """diffusers' timesteps τ (0-based, descending, float64) for ``timestep_spacing``
    ("linspace" | "leading" | "trailing", steps_offset = 0) with T = ``steps``.

    ``multistep``: DPMSolverMultistep / UniPCMultistep (N + 1 points with the last dropped,
    rounded to integers); otherwise Euler / Heun discrete (N points, "linspace" fractional).
    "trailing" is round(T − i·T/N) − 1 for i < N: exactly N timesteps (diffusers'
    ``np.arange(T, 0, −T/N)`` gives N + 1 when T/N rounds down, e.g. 62 for N = 61 at
    T = 1000; the extra last one is below every other and is dropped here).
    An improved-diffusion spacing ("ddimN", "10,15,20") gives its integer steps − 1."""
    n = count
    if spacing == "trailing":
        return np.array([round(steps - i * steps / n) - 1.0 for i in range(n)])
    if spacing not in SPACINGS:
        return np.array(space_timesteps(steps, None, spacing), dtype=np.float64) - 1.0
    if multistep:
        if spacing == "linspace":
            return np.linspace(0, steps - 1, n + 1).round()[::-1][:-1].astype(np.float64)
        return (np.arange(0, n + 1) * (steps // (n + 1))).round()[::-1][:-1].astype(np.float64)
    if spacing == "linspace":
        return np.linspace(0, steps - 1, n, dtype=np.float32)[::-1].astype(np.float64)
    return (np.arange(0, n) * (steps // n)).round()[::-1].astype(np.float64)


def _sigma_at_timesteps(tau: np.ndarray, table: np.ndarray) -> np.ndarray:
    """σ at diffusers' timesteps τ, linear in τ between integer ones (diffusers' np.interp);
    an integer τ takes its table entry as is (σ_T = ∞ of a zero-terminal-SNR schedule stays ∞
    where np.interp would give ∞·0 = NaN)."""
    whole = tau == np.floor(tau)
    exact = table[np.clip(tau, 0, len(table) - 1).astype(np.int64)]
    with np.errstate(invalid="ignore"):
        between = np.interp(tau, np.arange(len(table)), table)
    return np.where(whole, exact, between)


def solver_steps(
    alpha_bar: Tensor,
    count: int,
    sigmas: str = "schedule",
    spacing: str = "linspace",
    *,
    multistep: bool,
    start: int | float | None = None,
    rho: float = 7.0,
) -> list[float]:
    """The fractional steps (descending floats in [1, T]) a solver visits on a VP schedule.

    ``sigmas`` "schedule": σ at diffusers' timesteps τ (:func:`diffusers_timesteps`), σ linear
    in τ between integer steps as diffusers interpolates; "karras": Karras et al.'s eq. 5 grid
    of ``count`` levels (``rho``, 7 as diffusers) between the ends of the schedule's σ
    (``multistep``) or of the spaced σ (Euler / Heun), as diffusers' ``use_karras_sigmas``.
    Each σ becomes the step :func:`corediff.maths.gaussian.step_from_sigma` gives (τ + 1
    exactly at integer τ). An explicit ``start`` is visited first, then the grid's steps below
    it (:func:`corediff.maths.timesteps.visit_from`).
    """
    steps = len(alpha_bar) - 1
    tau = diffusers_timesteps(steps, count, spacing, multistep=multistep)
    table = ve_sigma(alpha_bar.double()[1:]).numpy()
    sigma = _sigma_at_timesteps(tau, table)
    if sigmas == "karras":
        low, high = (table[0], table[-1]) if multistep else (sigma[-1], sigma[0])
        if not math.isfinite(high):
            raise ValueError(
                "sigmas = 'karras' needs a finite largest noise level, but this schedule has "
                "zero terminal SNR (σ_T = ∞); use sigmas = 'schedule'")
        sigma = karras_sigmas(count, float(low), float(high), rho).numpy()
        sigma[0], sigma[-1] = high, (low if count > 1 else high)  # ends exact: T is T
    grid = step_from_sigma(torch.from_numpy(np.ascontiguousarray(sigma)), alpha_bar).tolist()
    if any(a <= b for a, b in zip(grid, grid[1:], strict=False)):
        raise ValueError(f"{count} '{spacing}' solver steps repeat a step of T = {steps}")
    return visit_from(grid, None if start is None else float(start), steps)


def nodes(steps: list[float], family: Any) -> list[Node]:
    """A :class:`Node` per visited time, then the final one at t = 0 (σ = 0), for a member of
    the Gaussian family (:class:`corediff.maths.family.GaussianFamily`) or, as before, a VP
    schedule's ᾱ tensor."""
    t = torch.tensor([*steps, 0.0], dtype=torch.float64)
    if isinstance(family, Tensor):
        sigma = sigma_at_step(t, family)
        alpha = (1 + sigma.square()).rsqrt()
        columns = (t, sigma, alpha, torch.where(sigma.isinf(), 1.0, sigma * alpha),
                   -sigma.log())
    else:
        level, alpha, sigma, lam = family.coefficients(t)
        columns = (t, level, alpha, sigma, lam)
    return [Node(*row) for row in zip(*(c.tolist() for c in columns), strict=True)]


def family_steps(family: Any, config: Any, *, multistep: bool,
                 start: int | float | None = None) -> list[float]:
    """The times a σ-space solver with a :class:`SolverGridConfig` visits on a member of the
    Gaussian family, descending, from ``start`` (default: the member's t_max).

    * VP (integer steps): :func:`solver_steps` (diffusers' grids; ``rho`` of the Karras grid);
    * flow: ``sigmas = 'schedule'`` is diffusers' FlowMatchEulerDiscreteScheduler grid with
      SD3's ``shift`` (:func:`corediff.maths.flow.flow_time_grid`);
    * EDM: the Karras grid (eq. 5) from the schedule's σ_min, σ_max and ρ, each overridden by
      the config's ``sigma_min``, ``sigma_max``, ``rho`` when set.

    A field that has no meaning for the member is refused with one sentence (ValueError). A
    continuous grid that does not start at t_max (EDM's ``sigma_max`` set below it) is entered
    from t_max, where the prior draws x, as an explicit ``start`` is (a VP "leading" grid keeps
    diffusers' convention of starting below T)."""
    from corediff.maths.edm import sigma_steps
    from corediff.maths.family import EDMFamily, FlowFamily
    from corediff.maths.flow import flow_time_grid

    rho = config.rho if config.rho is not None else family.default_rho()
    shift = getattr(config, "shift", 1.0)
    config_type = getattr(getattr(family, "config", None), "type", None)
    name = f"degradation '{config_type}'" if config_type else type(family).__name__
    if shift != 1.0 and not isinstance(family, FlowFamily):
        raise ValueError(f"shift = {shift} is SD3's time shift of flow matching's grid; "
                         f"it has no meaning for {name}")
    if config.spacing != "linspace" and not family.integer_steps:
        raise ValueError(f"spacing = '{config.spacing}' picks timesteps of a discrete "
                         f"schedule; {name} has continuous times")
    if isinstance(family, FlowFamily):
        if config.sigmas == "karras":
            raise ValueError("sigmas = 'karras' needs a finite largest noise level, but flow "
                             "matching starts at t = 1 (σ/α = ∞); use sigmas = 'schedule'")
        grid = flow_time_grid(config.steps, shift)
    elif isinstance(family, EDMFamily):
        low, high = family.sigma_range()
        grid = sigma_steps(config.steps, config.sigma_min or low, config.sigma_max or high, rho)
    elif family.integer_steps:
        if config.sigma_min is not None or config.sigma_max is not None:
            raise ValueError("sigma_min / sigma_max bound EDM's Karras grid; a VP schedule's "
                             "grid spans its own σ")
        grid = solver_steps(family.schedule.values(), config.steps, config.sigmas,
                            config.spacing, multistep=multistep, rho=rho)
    else:
        low, high = family.sigma_range()
        levels = karras_sigmas(config.steps, config.sigma_min or low, config.sigma_max or high,
                               rho)
        grid = family.t_from_sigma(levels).tolist()
    if start is None and not family.integer_steps and grid and grid[0] != family.t_max:
        start = family.t_max  # x lives at t_max (the prior's time): visit it first
    return visit_from(grid, None if start is None else float(start), family.t_max)


class SolverGridConfig(ComponentConfig):
    """Config fields of a σ-space solver on any member of the Gaussian family: derive a
    solver's Config from it (:func:`family_steps` reads them)."""

    steps: StepCount = Field(20, description="Solver steps N (visited noise levels).")
    sigmas: Literal["schedule", "karras"] = Field(
        "schedule",
        description="'schedule': the member's own grid (VP: the schedule's σ at the spaced "
        "timesteps, diffusers' default; flow: diffusers' flow-matching grid; EDM: its "
        "Karras grid); 'karras': Karras et al. 2022's ρ-grid (diffusers' use_karras_sigmas).",
    )
    spacing: Spacing = Field(
        "linspace", description="The timestep spacing of a VP schedule's 'schedule' grid "
        "(one vocabulary with DDIM's: 'leading' | 'trailing' | 'linspace' | 'ddimN' | "
        "'n1,n2,...')."
    )
    rho: PositiveFloat | None = Field(
        None, description="ρ of a Karras grid (None: the schedule's ρ for EDM, else 7).")
    sigma_min: PositiveFloat | None = Field(
        None, description="EDM: lowest noise level visited (None: the schedule's sigma_min).")
    sigma_max: PositiveFloat | None = Field(
        None, description="EDM: highest noise level visited (None: the schedule's sigma_max).")
    shift: PositiveFloat = Field(
        1.0, description="Flow matching: SD3's time shift s of the grid, t' = s·t/(1 + (s − 1)·t) "
        "(1: none; SD3 uses 3.0 at 1024², Esser et al. 2024, §5.3.2).")

    @model_validator(mode="after")
    def _check_steps(self) -> SolverGridConfig:
        check_spacing_steps(self.spacing, self.steps)
        return self


def grid_problems(cls: type, config: ComponentConfig,
                  others: Mapping[str, tuple[type, ComponentConfig]]) -> list[str]:
    """For ``check_recipe`` of a sampler whose ``timesteps()`` reads only its config and the
    degradation: the sentence its grid refuses with for the recipe's schedule and degradation
    (a Karras grid on flow, a shift on EDM, too many steps, ...), so ``corediff recipe
    validate`` says it before anything is built; empty when the grid is fine or the
    degradation cannot be built here."""
    try:
        schedule_cls, schedule_config = others["schedule"]
        degradation_cls, degradation_config = others["degradation"]
        degradation = degradation_cls(degradation_config, schedule=schedule_cls(schedule_config))
    except Exception:  # noqa: BLE001 - the degradation's own checks report it
        return []
    bare = cls.__new__(cls)
    bare.config, bare.degradation = config, degradation
    try:
        bare.timesteps()
    except ValueError as error:
        return [str(error)]
    return []


class GridSolver(Sampler):
    """A sampler of the Gaussian family visiting :func:`family_steps` for its config
    (``multistep``: the DPM-Solver / UniPC family's VP grid, else Euler / Heun's).
    :meth:`nodes` gives the plan's float64 quantities."""

    requires = {"degradation": frozenset({"gaussian_family"})}
    multistep: ClassVar[bool] = True

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.timesteps()  # refuse a grid the schedule cannot give when the sampler is built

    @classmethod
    def check_recipe(cls, config: ComponentConfig,
                     others: Mapping[str, tuple[type, ComponentConfig]]) -> list[str]:
        return grid_problems(cls, config, others)

    def timesteps(self, start: int | float | None = None) -> list[float]:
        return family_steps(self.degradation, self.config, multistep=self.multistep,
                            start=start)

    def nodes(self, steps: list[float]) -> list[Node]:
        """The visited times' nodes and the final t = 0 one (see :func:`nodes`)."""
        return nodes(steps, self.degradation)


#: The two variables Euler and Heun integrate the probability-flow ODE in: ``"sigma"``
#: (Karras et al.: y = x/α over u = σ/α, k-diffusion, diffusers' Euler / Heun, EDM) and
#: ``"flow"`` (y = x/(α + σ) over u = σ/(α + σ): rectified flow's own x over t, diffusers'
#: FlowMatchEuler / FlowMatchHeun). Both make x_t affine in u for a fixed (x0, ε), so their
#: Euler step is DDIM's; their Heun corrections differ.
Variable = Literal["sigma", "flow"]


def scale_and_level(node: Node, variable: str) -> tuple[float, float]:
    """(c, u) of a node in ``variable``: the state is y = x/c, the ODE variable u, with
    dy/du = (y − x̂0)/u."""
    if variable == "sigma":
        return node.alpha, node.sigma
    total = node.alpha + node.sigma_vp
    return total, node.sigma_vp / total
