"""Running a study: every cell × seed is trained once (skipped when finished, resumed when
interrupted) and evaluated with every sampler (each evaluation skipped when its JSON exists).

Layout under the study's output directory::

    <out>/<cell>/seed<s>/              a run directory (checkpoints, metrics.csv, samples.png)
    <out>/<cell>/seed<s>/study.json    train_seconds of the finished training (of the last
                                       session when it was resumed)
    <out>/<cell>/seed<s>/eval_<sampler>.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from corediff.errors import ConfigError
from corediff.studies.config import Cell, SamplerSpec, Study, load_study


def run_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / cell.name.replace("=", "-").replace(",", "_") / f"seed{seed}"


def validate_cells(study: Study) -> None:
    """Every cell's recipe, and every sampler override on it, must validate before anything
    is trained."""
    from corediff.recipe import load_recipe

    for cell in study.cells():
        for sampler in study.samplers_for(cell):
            try:
                load_recipe(study.recipe, [*cell.overrides, *sampler.set, "run.seed=0"])
            except ConfigError as exc:
                raise ConfigError(f"{study.path}: cell '{cell.name}' with sampler "
                                  f"'{sampler.name}': {exc}") from None


def finished_step(directory: Path) -> int | None:
    """The step of the run's ``last`` checkpoint (None when there is none)."""
    state = directory / "checkpoints" / "last" / "state.json"
    if not state.is_file():
        return None
    return int(json.loads(state.read_text(encoding="utf-8"))["step"])


def train_cell(study: Study, cell: Cell, seed: int, out: Path) -> Path:
    """Train (or finish training) one cell at one seed; returns its run directory."""
    from corediff.engine import distributed
    from corediff.engine.checkpoint import atomic_write_text
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import run_training
    from corediff.recipe import load_recipe

    directory = run_dir(out, cell, seed)
    recipe = load_recipe(study.recipe, [*cell.overrides, f"run.seed={seed}"])
    record = directory / "study.json"
    if record.is_file():
        return directory
    step = finished_step(directory)
    context = distributed.setup(recipe.run.device)
    clock = time.perf_counter()
    try:
        trainer = run_training(recipe, RunDir(directory), context, resume=step is not None)
        trainer.sample_grid(RunDir(directory).sample_grid())
    finally:
        distributed.teardown(context)
    summary = {"train_seconds": time.perf_counter() - clock, "resumed_from_step": step}
    atomic_write_text(record, json.dumps(summary) + "\n")
    return directory


def evaluate_cell(study: Study, directory: Path, sampler: SamplerSpec, seed: int) -> Path:
    """Evaluate a trained run with one sampler (skipped when its JSON exists)."""
    from corediff.engine.checkpoint import atomic_write_text
    from corediff.evaluation.report import evaluate_checkpoint

    target = directory / f"eval_{sampler.name}.json"
    if target.is_file():
        return target
    _, report = evaluate_checkpoint(directory, sampler.set, n=study.spec.study.n, seed=seed)
    atomic_write_text(target, json.dumps(report, indent=1) + "\n")
    return target


def run_one(study_path: str, cell_name: str, seed: int, out: str) -> str:
    """Train and evaluate one (cell, seed): the unit a launcher runs (picklable arguments)."""
    study = load_study(study_path)
    cell = next(c for c in study.cells() if c.name == cell_name)
    directory = train_cell(study, cell, seed, Path(out))
    for sampler in study.samplers_for(cell):
        evaluate_cell(study, directory, sampler, seed)
    return str(directory)


def collect(study: Study, out: Path) -> list[dict[str, Any]]:
    """One row per (cell, sampler, seed) with its labels and flattened metrics."""
    rows = []
    for cell in study.cells():
        for seed in study.spec.study.seeds:
            directory = run_dir(out, cell, seed)
            record = directory / "study.json"
            train = json.loads(record.read_text()) if record.is_file() else {}
            for sampler in study.samplers_for(cell):
                path = directory / f"eval_{sampler.name}.json"
                if not path.is_file():
                    continue
                report = json.loads(path.read_text(encoding="utf-8"))
                metrics = flatten_numbers(report)
                metrics["train_seconds"] = train.get("train_seconds", float("nan"))
                rows.append({"cell": cell.name, "sampler": sampler.name, "seed": seed,
                             "labels": {**dict(cell.labels), "sampler": sampler.name},
                             "metrics": metrics, "run": str(directory)})
    return rows


def flatten_numbers(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested report -> {"digits.fd": 21.4, ...} (numbers only)."""
    flat: dict[str, float] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat
