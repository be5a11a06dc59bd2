"""Time grids: which times a sampler visits — one contract for every sampler.

* One spacing vocabulary (:func:`check_spacing`, the ``Spacing`` config field of both grid
  configs, :class:`TimeGridConfig` here and the family solvers'
  :class:`corediff.maths.solvers.SolverGridConfig`): diffusers' ``timestep_spacing``
  "leading", "trailing", "linspace" (steps_offset = 0; diffusers' timestep k is our step
  k + 1) and improved-diffusion's ``space_timesteps`` strings "ddimN" (the stride giving
  exactly N steps) and section counts "10,15,20" with improved-diffusion's exact rounding;
  anything else is refused with one sentence. "even" (Cold Diffusion's N steps evenly spaced
  from the start down to 1) is the cold samplers' own grid, not a config spelling.
* One "visit start first" rule (:func:`visit_from`): a start below t_max (generation from a
  partially degraded x, or restoration) is visited first, then the grid's times below it.
* :func:`time_grid` gives every integer-step grid a first-party sampler uses (DDPM, DDIM,
  Cold), so a third-party sampler gets the same step lists as DDIM by calling it; the σ-space
  grids of the Gaussian family are :func:`corediff.maths.solvers.family_steps`.

Steps are integers in {1..T}; t = 0 is the clean image (never visited: the last move goes
to 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field, field_validator, model_validator

from corediff.config import ComponentConfig, StepCount

SPACINGS = ("leading", "trailing", "linspace")


def space_timesteps(steps: int, count: int | None, spacing: str) -> list[int]:
    """Kept steps t (descending, in {1..T}) of a respaced run.

    ``spacing`` is diffusers' timestep_spacing ("leading", "trailing", "linspace", with
    steps_offset = 0; ``count`` None means all T) or improved-diffusion's space_timesteps
    string ("ddim50", or section counts "10,15,20"; ``count`` must be None or their total).
    diffusers' timestep k is our step k + 1.
    """
    if spacing in SPACINGS:
        n = steps if count is None else count
        if n > steps:
            raise ValueError(f"cannot take {n} sampling steps from T = {steps}")
        if spacing == "leading":
            k = [i * (steps // n) for i in range(n)]
        elif spacing == "trailing":
            k = [round(steps - i * steps / n) - 1 for i in range(n)]
        else:
            k = [round(i * (steps - 1) / (n - 1)) if n > 1 else 0 for i in range(n)]
        kept = {i + 1 for i in k}
    elif spacing.startswith("ddim"):
        n = int(spacing[4:])
        stride = next((i for i in range(1, steps) if len(range(0, steps, i)) == n), None)
        if stride is None:
            raise ValueError(f"cannot take exactly {n} evenly strided steps from T = {steps}")
        kept = {i + 1 for i in range(0, steps, stride)}
    else:
        kept = {i + 1 for i in _section_steps(steps, [int(c) for c in spacing.split(",")])}
    if count is not None and spacing not in SPACINGS and count != len(kept):
        raise ValueError(f"steps = {count} contradicts spacing '{spacing}' ({len(kept)} steps)")
    return sorted(kept, reverse=True)


def _section_steps(steps: int, counts: list[int]) -> list[int]:
    """improved-diffusion's sections: T split into len(counts) near-equal parts, each
    sampled at ``count`` evenly spaced (rounded) indices including both ends."""
    size, extra = divmod(steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if not 0 < count <= length:
            raise ValueError(f"cannot take {count} steps from a section of {length}")
        stride = 1.0 if count == 1 else (length - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += length
    return kept


def _spacing(spacing: str) -> str:
    return check_spacing(spacing)


#: A config field in the one spacing vocabulary (:func:`check_spacing`).
Spacing = Annotated[str, AfterValidator(_spacing)]


class TimeGridConfig(ComponentConfig):
    """Config fields of a sampler on a respaced grid (DDPM, DDIM, third-party solvers):
    derive a sampler's Config from it and call :func:`time_grid` with its values."""

    steps: StepCount | None = Field(
        None, description="Sampling steps (None: all T, or the count the spacing string gives)."
    )
    spacing: str = Field(
        "trailing",
        description="diffusers' 'leading' | 'trailing' | 'linspace', or improved-diffusion's "
        "'ddimN' / section counts '10,15,20'.",
    )
    clip_x0: bool = Field(False, description="Clamp x̂0 to [-1, 1] at every step.")

    @field_validator("spacing")
    @classmethod
    def _check_spacing(cls, spacing: str) -> str:
        return check_spacing(spacing)

    @model_validator(mode="after")
    def _check_steps(self) -> TimeGridConfig:
        check_spacing_steps(self.spacing, self.steps)
        return self


def check_spacing(spacing: str) -> str:
    """The one spacing vocabulary of every time-grid config (:class:`TimeGridConfig`, the
    σ-space solvers' :class:`corediff.maths.solvers.SolverGridConfig`): diffusers'
    "leading" | "trailing" | "linspace", improved-diffusion's "ddimN" and section counts
    "n1,n2,...". Anything else is refused with one sentence naming them."""
    if spacing in SPACINGS or re.fullmatch(r"ddim[1-9]\d*|[1-9]\d*(,[1-9]\d*)*", spacing):
        return spacing
    raise ValueError(
        f"unknown spacing '{spacing}': use diffusers' 'leading', 'trailing' or 'linspace', "
        "or improved-diffusion's 'ddimN' or section counts such as '10,15,20'")


def check_spacing_steps(spacing: str, steps: int | None) -> None:
    """Refuse a step count that an improved-diffusion spacing string contradicts."""
    if steps is None or spacing in SPACINGS:
        return
    digits = spacing.removeprefix("ddim").split(",")
    if steps != sum(int(c) for c in digits):
        raise ValueError(f"steps = {steps} contradicts spacing '{spacing}'")


def visit_from(grid: list, start: int | float | None, t_max: int | float) -> list:
    """The one "visit ``start`` first" rule of every grid (steps, flow times, σ): with start
    None the grid as is; else start, then the grid's times below it. ``start`` must lie in
    1..T for a discrete time (int ``t_max``), in (0, t_max] for a continuous one."""
    if start is None:
        return list(grid)
    if isinstance(t_max, int) and not isinstance(t_max, bool):
        if not 0 < start <= t_max:
            raise ValueError(f"start must lie in 1..{t_max}, got {start}")
    elif not 0 < start <= t_max:
        raise ValueError(f"start must lie in (0, {t_max}], got {start}")
    start = start if isinstance(start, int) and isinstance(t_max, int) else float(start)
    return [start] + [t for t in grid if t < start]


def visited_steps(kept: list[int], steps: int, start: int | None) -> list[int]:
    """Kept steps at or below ``start``; an explicit start is always visited first
    (:func:`visit_from` on integer steps).

    With start None this is diffusers' list as is ("leading" then begins below T, treating
    the prior's x_T as x at the first kept step, as diffusers does).
    """
    return visit_from(kept, start, int(steps))


def time_grid(steps: int, count: int | None, spacing: str, start: int | None = None) -> list[int]:
    """The steps a sampler visits, descending, from ``start`` (default: the grid's first).

    Args:
        steps: T, the schedule's number of steps.
        count: how many steps to keep (None: all T, or the count a spacing string gives).
        spacing: "leading" | "trailing" | "linspace" | "ddimN" | "n1,n2,..." | "even".
        start: the step x lives at when sampling starts (1..T; None: T for "even", the
            respaced grid as is otherwise).

    >>> time_grid(1000, 5, "trailing", start=700)
    [700, 600, 400, 200]
    """
    if spacing == "even":
        return even_steps(steps, count, start)
    return visited_steps(space_timesteps(steps, count, spacing), steps, start)


def even_steps(steps: int, count: int | None, start: int | None = None) -> list[int]:
    """Cold Diffusion's grid: ``count`` steps evenly spaced from start (default T) to 1, rounded
    (None or count ≥ start: every step start, start − 1, ..., 1)."""
    start = steps if start is None else start
    if not 0 < start <= steps:
        raise ValueError(f"start must lie in 1..{steps}, got {start}")
    if count is None or count >= start:
        return list(range(start, 0, -1))
    grid = torch.linspace(start, 0, count + 1, dtype=torch.float64)[:-1]
    return sorted({int(s) for s in grid.round().long().tolist()}, reverse=True)


def time_at(fraction: float, t_max: int | float) -> int | float:
    """The time ``fraction`` of the way to ``t_max``: the step max(1, round(fraction·T)) of a
    discrete degradation (int t_max), fraction·t_max of a continuous one (float t_max)."""
    if isinstance(t_max, int):
        return max(1, round(fraction * t_max))
    return fraction * t_max


#: The capabilities of degradations whose times are continuous only (no integer steps).
CONTINUOUS_ONLY = frozenset({"unit_time", "sigma_time"})


def refuse_continuous_only(what: str, others: Mapping[str, tuple[type, Any]]) -> list[str]:
    """For ``Component.check_recipe`` of a component that walks integer steps: one sentence
    when the recipe's degradation takes continuous times only (flow matching, EDM)."""
    cls, config = others["degradation"]
    if CONTINUOUS_ONLY & cls.capabilities(config):
        return [f"{what} walks the integer steps of a discrete degradation, but "
                f"'{config.type}' takes continuous times only"]
    return []

