"""Study files: a declarative comparison, validated like a recipe.

    [study]
    name = "svd_questions"
    recipe = "recipes/svd_digits.toml"    # the base recipe, relative to this file
    seeds = [0, 1, 2]                     # each cell is trained once per seed (run.seed)
    n = 200                               # samples per evaluation
    metrics = ["digits.fd", "restoration.sampled.psnr"]
    set = ["train.steps=400"]             # overrides for every cell

    [axes.noise]                          # axes: a cross product of levels ...
    off = []
    on = ["diffusion.degradation.noise_std=0.05"]

    [[cells]]                             # ... or an explicit list of cells
    name = "rank_energy"
    set = ["diffusion.schedule.type='rank_energy'"]

    [[samplers]]                          # every trained model is evaluated with each
    name = "alg2"                         # (any sample-time override: sampler, prior, guidance)
    set = ["diffusion.sampler.type='cold_improved'"]
    cells = ["noise=off"]                 # optional: only cells with these labels

    [[questions]]                         # answered in RESULTS.md from the numbers
    text = "Does training noise help?"
    metric = "digits.fd"
    better = "lower"
    compare = ["noise=off,sampler=alg2", "noise=on,sampler=alg2"]   # groups, compared by seed
    aggregate = "none"                    # or "mean": a group of several (cell, sampler)
                                          # rows is their mean on each seed

Cells are named by their labels (``noise=on``, or the explicit cell's name as ``cell=NAME``);
a group selector ``key=value[,key=value]`` matches rows whose labels (the axes, ``cell`` and
``sampler``) carry those values. When the study loads, every metric name, selector and
sampler name is checked against what the study defines (exit 2 with a did-you-mean), and a
selector that pools several (cell, sampler) rows is refused unless the question says how to
aggregate them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from corediff.config import Seed, StrictModel
from corediff.errors import ConfigError, did_you_mean
from corediff.evaluation.names import METRICS
from corediff.limits import MAX_SAMPLES
from corediff.recipe import Problem, _problems, read_toml

#: A plain name: a cell, sampler, axis or level (they name folders of the study).
PLAIN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,59}$"


class StudySection(StrictModel):
    """[study]: what is compared, how often, and measured how."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$",
                      description="Study name (plain: letters, digits, '.', '_', '-', not "
                      "starting with '.'; it names the study's folder).")
    description: str = Field("", description="One paragraph for RESULTS.md.")
    recipe: str = Field(description="Base recipe, relative to the study file.")
    seeds: list[Seed] = Field([0, 1, 2], min_length=1, description="run.seed of each repeat.")
    n: int = Field(200, ge=2, le=MAX_SAMPLES, description="Samples per evaluation.")
    metrics: list[str] = Field(min_length=1, description="Dotted metric names for the table, "
                               "e.g. digits.fd or restoration.sampled.psnr.")
    set: list[str] = Field([], description="--set overrides applied to every cell.")
    plot_metric: str | None = Field(None, description="Metric of the quality-versus-nfe plot "
                                    "(default: the first of metrics).")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for metric in metrics:
            known_metric(metric)
        return metrics

    @field_validator("plot_metric")
    @classmethod
    def _known_plot_metric(cls, metric: str | None) -> str | None:
        return None if metric is None else known_metric(metric)


def known_metric(metric: str) -> str:
    """``metric`` when an evaluation report can hold it, else a ValueError that says which."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'.{did_you_mean(metric, METRICS)} Known: "
                         f"{', '.join(METRICS)}")
    return metric


class CellSpec(StrictModel):
    """[[cells]]: one explicitly listed cell."""

    name: str = Field(pattern=PLAIN, description="Cell name (plain).")
    set: list[str] = Field([], description="--set overrides of this cell.")


class SamplerSpec(StrictModel):
    """[[samplers]]: one way of evaluating every (selected) trained model."""

    name: str = Field(pattern=PLAIN, description="Sampler name (plain).")
    set: list[str] = Field([], description="Sample-time --set overrides.")
    cells: list[str] = Field([], description="Only cells matching one of these selectors.")


class Question(StrictModel):
    """[[questions]]: a comparison RESULTS.md answers from the numbers."""

    text: str = Field(description="The question, as asked.")
    metric: str = Field(description="The dotted metric that answers it.")
    better: Literal["lower", "higher"] = Field(description="Which direction is better.")
    compare: list[str] = Field(min_length=2, description="Group selectors to compare.")
    aggregate: Literal["none", "mean"] = Field(
        "none", description="How a group of several (cell, sampler) rows becomes one value "
        "per seed: 'none' refuses such a group, 'mean' averages its rows on each seed.")

    _metric = field_validator("metric")(lambda metric: known_metric(metric))


class SlurmSection(StrictModel):
    """[slurm]: submitit's executor parameters for --launcher slurm."""

    partition: str | None = Field(None, description="SLURM partition.")
    timeout_min: int = Field(240, gt=0, description="Time limit per cell, minutes.")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per job.")
    cpus_per_task: int = Field(8, gt=0, description="CPU cores per job.")


class StudyFile(StrictModel):
    """A whole study file."""

    study: StudySection
    axes: dict[str, dict[str, list[str]]] = Field(
        {}, description="Axis name -> level name -> --set overrides (cross product).")
    cells: list[CellSpec] = Field([], description="Explicit cells (instead of axes).")
    samplers: list[SamplerSpec] = Field(
        [SamplerSpec(name="recipe")], min_length=1,
        description="Evaluations per trained model (default: the recipe's own sampler).")
    questions: list[Question] = Field([], description="Comparisons to answer.")
    slurm: SlurmSection = SlurmSection()

    @model_validator(mode="after")
    def _axes_or_cells(self) -> StudyFile:
        if bool(self.axes) == bool(self.cells):
            raise ValueError("give either [axes.*] tables or [[cells]], not both and not none")
        for axis, levels in self.axes.items():
            if not levels:
                raise ValueError(f"axis '{axis}' has no levels")
            for name in (axis, *levels):
                if not re.fullmatch(PLAIN, name):
                    raise ValueError(f"axis or level name '{name}' must be plain (letters, "
                                     "digits, '.', '_', '-', not starting with '.'; at most 60)")
            if axis in {"cell", "sampler"}:
                raise ValueError(f"axis name '{axis}' is reserved for the labels of a row")
        names = [cell.name for cell in self.cells] or [s.name for s in self.samplers]
        if len(set(names)) != len(names) or len({s.name for s in self.samplers}) != len(
                self.samplers):
            raise ValueError("cell and sampler names must be unique")
        return self


@dataclass(frozen=True)
class Cell:
    """One trained configuration: its labels (axis levels or the cell name) and overrides."""

    labels: tuple[tuple[str, str], ...]
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels)


@dataclass(frozen=True)
class Study:
    """A validated study: where it lives, its cells, its base recipe path."""

    path: Path
    spec: StudyFile

    @property
    def recipe(self) -> Path:
        return (self.path.parent / self.spec.study.recipe).resolve()

    def cells(self) -> list[Cell]:
        base = tuple(self.spec.study.set)
        if self.spec.cells:
            return [Cell((("cell", c.name),), base + tuple(c.set)) for c in self.spec.cells]
        axes = list(self.spec.axes.items())
        cells = []
        for levels in itertools.product(*(list(levels.items()) for _, levels in axes)):
            labels = tuple((axis, level) for (axis, _), (level, _) in zip(axes, levels,
                                                                            strict=True))
            overrides = base + tuple(o for _, sets in levels for o in sets)
            cells.append(Cell(labels, overrides))
        return cells

    def samplers_for(self, cell: Cell) -> list[SamplerSpec]:
        return [s for s in self.spec.samplers
                if not s.cells or any(matches(dict(cell.labels), sel) for sel in s.cells)]

    def design(self) -> list[dict[str, str]]:
        """The labels of every (cell, sampler) row the study measures (on each seed)."""
        return [{**dict(cell.labels), "sampler": sampler.name}
                for cell in self.cells() for sampler in self.samplers_for(cell)]

    def problems(self) -> list[Problem]:
        """Selectors that name no label, no level or no row, and groups that would pool
        several (cell, sampler) rows without an ``aggregate``."""
        cells = [dict(cell.labels) for cell in self.cells()]
        problems = [Problem(("samplers", i, "cells"), message)
                    for i, sampler in enumerate(self.spec.samplers)
                    for selector in sampler.cells
                    if (message := selector_problem(selector, cells))]
        rows = self.design()
        for i, question in enumerate(self.spec.questions):
            for selector in question.compare:
                message = selector_problem(selector, rows)
                pooled = {(r.get("cell") or cell_name(r), r["sampler"])
                          for r in rows if matches(r, selector)}
                if not message and len(pooled) > 1 and question.aggregate == "none":
                    message = (f"group '{selector}' pools {len(pooled)} (cell, sampler) rows; "
                               "name one cell and sampler, or set aggregate = 'mean'")
                if message:
                    problems.append(Problem(("questions", i, "compare"), message))
        return problems


def cell_name(labels: dict[str, str]) -> str:
    """A row's cell name from its labels (every label but the sampler)."""
    return ",".join(f"{k}={v}" for k, v in labels.items() if k != "sampler")


def selector_problem(selector: str, rows: list[dict[str, str]]) -> str:
    """Why ``selector`` matches none of ``rows`` (with a did-you-mean), or '' when it does."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for part in selector.split(","):
        key, equals, value = (p.strip() for p in part.partition("="))
        if not equals or key not in keys:
            return (f"selector '{selector}': '{key}' is not a label.{did_you_mean(key, keys)} "
                    f"Labels: {', '.join(keys)} (as key=value)")
        values = list(dict.fromkeys(row[key] for row in rows if key in row))
        if value not in values:
            return (f"selector '{selector}': {key} has no value '{value}'."
                    f"{did_you_mean(value, values)} Values: {', '.join(values)}")
    if not any(matches(row, selector) for row in rows):
        return f"selector '{selector}' matches nothing this study measures"
    return ""


def matches(labels: dict[str, str], selector: str) -> bool:
    """Whether ``labels`` carry every ``key=value`` of ``selector`` (comma separated)."""
    wanted = [part.partition("=") for part in selector.split(",")]
    return all(labels.get(key.strip()) == value.strip() for key, _, value in wanted)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; every problem at once, by table and key (exit 2)."""
    path = Path(path)
    data = read_toml(path, f"study file '{path}'")
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as exc:
        problems = [str(p) for p in _problems(exc, StudyFile, prefix=())]
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"{path}: invalid study\n{lines}") from None
    study = Study(path, spec)
    problems = study.problems()
    if not study.recipe.is_file():
        problems.insert(0, Problem(("study", "recipe"), f"'{study.recipe}' is not a file"))
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"{path}: invalid study\n{lines}")
    return study
