"""Running a study: every cell × seed is trained once (reused when finished with the same
settings, resumed when interrupted, trained again when its settings changed) and evaluated with
every sampler (reused only when the evaluation's settings are unchanged).

Every run and every evaluation carries a **fingerprint**: a hash of everything that determines
it — for a run, the resolved recipe after the cell's overrides and the seed (its ``[sample]``
table, sampler and guidance excepted: they act only when sampling; experiment trackers,
``[log]``, ``run.tags`` and the collective timeout, excepted everywhere: :data:`NO_EFFECT`)
and the corediff version;
for an evaluation, the run's fingerprint, the resolved recipe with the sampler's overrides, n,
the seed and the corediff version. A run or evaluation whose fingerprint differs from the
study's current one is moved aside into ``<out>/stale/`` (never mixed in, never overwritten)
and made again; :func:`collect` reads only results with the current fingerprint.

Layout under the study's output directory::

    <out>/<cell>/seed<s>/              a run directory (checkpoints, metrics.csv, samples.png)
    <out>/<cell>/seed<s>/study.json    its fingerprint, then train_seconds and train_steps
    <out>/<cell>/seed<s>/eval_<sampler>.json
    <out>/floor/<data>/seed<s>.json    real data scored by the same metrics (the floor row)
    <out>/stale/...                    runs and evaluations of older fingerprints
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from corediff.errors import ConfigError
from corediff.studies.config import Cell, SamplerSpec, Study, load_study

#: Recipe keys that do not change what a run computes: experiment trackers and their tags,
#: and how long processes wait for each other. In no fingerprint (a key added to recipes that
#: changes no result belongs here, or every study's runs would count as changed).
NO_EFFECT = (("log",), ("run", "tags"), ("train", "collective_timeout_s"))
#: Recipe parts that act only when sampling: they do not enter a run's fingerprint either.
SAMPLE_TIME = (("sample",), ("diffusion", "sampler"), ("diffusion", "guidance"))


def run_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / cell.name.replace("=", "-").replace(",", "_") / f"seed{seed}"


def fingerprint(data: Any) -> str:
    """A short SHA-256 of ``data`` as canonical JSON, with the corediff version."""
    from corediff import __version__

    text = json.dumps({"data": data, "corediff": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_recipe(study: Study, cell: Cell, seed: int, sampler: SamplerSpec | None = None) -> Any:
    """The resolved recipe of a cell at a seed (with a sampler's overrides when given), its
    run tagged with the study and cell for experiment trackers (the seed they log anyway)."""
    from corediff.recipe import load_recipe

    extra = [] if sampler is None else sampler.set
    tags = (f"run.tags={{study={json.dumps(study.spec.study.name)}, "
            f"cell={json.dumps(cell.name)}}}")
    return load_recipe(study.recipe, [*cell.overrides, *extra, f"run.seed={seed}", tags])


def run_fingerprint(study: Study, cell: Cell, seed: int) -> str:
    """What determines the trained weights of a cell at a seed (see the module docstring)."""
    from corediff.recipe import recipe_to_dict

    return fingerprint(without(recipe_to_dict(cell_recipe(study, cell, seed)),
                               NO_EFFECT + SAMPLE_TIME))


def without(data: dict[str, Any], keys: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """``data`` less the tables or keys at the given paths (in place; returned)."""
    for *parents, key in keys:
        table = data
        for parent in parents:
            table = table.get(parent, {})
        table.pop(key, None)
    return data


def eval_fingerprint(study: Study, cell: Cell, seed: int, sampler: SamplerSpec) -> str:
    """What determines an evaluation: the run, the sampling recipe, n and the seed."""
    from corediff.recipe import recipe_to_dict

    recipe = without(recipe_to_dict(cell_recipe(study, cell, seed, sampler)), NO_EFFECT)
    return fingerprint({"run": run_fingerprint(study, cell, seed), "recipe": recipe,
                        "n": study.spec.study.n, "seed": seed})


def validate_cells(study: Study) -> None:
    """Every cell's recipe, and every sampler override on it, must validate before anything
    is trained."""
    for cell in study.cells():
        for sampler in study.samplers_for(cell):
            try:
                cell_recipe(study, cell, 0, sampler)
            except ConfigError as exc:
                raise ConfigError(f"{study.path}: cell '{cell.name}' with sampler "
                                  f"'{sampler.name}': {exc}") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def set_aside(path: Path, out: Path, stored: str | None) -> Path:
    """Move a run or evaluation of another fingerprint to ``<out>/stale/`` (same relative
    place, suffixed by its fingerprint); returns where it went."""
    target = out / "stale" / path.relative_to(out)
    target = target.with_name(f"{target.stem}@{stored or 'unknown'}{target.suffix}")
    while target.exists():
        target = target.with_name(f"{target.stem}+{target.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def train_cell(study: Study, cell: Cell, seed: int, out: Path) -> Path:
    """Train (or finish training) one cell at one seed; returns its run directory. A run
    of another fingerprint is set aside first, and this one trained from the start."""
    from corediff.engine import distributed
    from corediff.engine.checkpoint import atomic_write_text
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import run_training

    directory = run_dir(out, cell, seed)
    current = run_fingerprint(study, cell, seed)
    record = read_json(directory / "study.json")
    if directory.exists() and record.get("fingerprint") != current:
        moved = set_aside(directory, out, record.get("fingerprint"))
        print(f"corediff: {cell.name} seed {seed}: its settings changed (fingerprint "
              f"{record.get('fingerprint')} -> {current}); the old run is kept in {moved}; "
              "training again", file=sys.stderr)
        record = {}
    if "train_seconds" in record:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "study.json", json.dumps({"fingerprint": current}) + "\n")
    recipe = cell_recipe(study, cell, seed)
    context = distributed.setup(recipe.run.device, recipe.train.collective_timeout_s)
    clock, cpu = time.perf_counter(), time.process_time()
    try:
        trainer = run_training(recipe, RunDir(directory), context,
                               resume=(directory / "recipe.toml").exists())
        trainer.sample_grid(RunDir(directory).sample_grid())
    finally:
        distributed.teardown(context)
    summary = {"fingerprint": current, "train_seconds": time.perf_counter() - clock,
               "train_cpu_seconds": time.process_time() - cpu, "train_steps": trainer.step}
    atomic_write_text(directory / "study.json", json.dumps(summary) + "\n")
    return directory


def evaluate_cell(study: Study, cell: Cell, seed: int, sampler: SamplerSpec, out: Path) -> Path:
    """Evaluate a trained run with one sampler (reused when its fingerprint is current)."""
    from corediff.engine.checkpoint import atomic_write_text
    from corediff.evaluation.report import evaluate_checkpoint

    directory = run_dir(out, cell, seed)
    target = directory / f"eval_{sampler.name}.json"
    current = eval_fingerprint(study, cell, seed, sampler)
    stored = read_json(target).get("fingerprint")
    if stored == current:
        return target
    if target.exists():
        set_aside(target, out, stored)
    clock, cpu = time.perf_counter(), time.process_time()
    _, report = evaluate_checkpoint(directory, sampler.set, n=study.spec.study.n, seed=seed)
    report["eval_seconds"] = round(time.perf_counter() - clock, 2)
    report["eval_cpu_seconds"] = round(time.process_time() - cpu, 2)
    atomic_write_text(target, json.dumps({"fingerprint": current, **report}, indent=1) + "\n")
    return target


def floor_path(study: Study, cell: Cell, seed: int, out: Path) -> tuple[Path, str]:
    """Where the floor of a cell's data at a seed lives, and its fingerprint (the data
    config, n and seed: cells on the same data share one floor)."""
    from corediff.recipe import recipe_to_dict

    data = recipe_to_dict(cell_recipe(study, cell, seed))["data"]
    current = fingerprint({"data": data, "n": study.spec.study.n, "seed": seed})
    return out / "floor" / fingerprint(data) / f"seed{seed}.json", current


def score_floor(study: Study, cell: Cell, seed: int, out: Path) -> Path:
    """Score real images of the cell's data with the same metrics at the same n."""
    from corediff.builder import build
    from corediff.engine.checkpoint import atomic_write_text
    from corediff.evaluation.report import floor_report

    target, current = floor_path(study, cell, seed, out)
    stored = read_json(target).get("fingerprint")
    if stored == current:
        return target
    if target.exists():
        set_aside(target, out, stored)
    clock = time.perf_counter()
    report = floor_report(build(cell_recipe(study, cell, seed)), n=study.spec.study.n,
                          seed=seed)
    report["eval_seconds"] = round(time.perf_counter() - clock, 2)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps({"fingerprint": current, **report}, indent=1) + "\n")
    return target


def run_one(study_path: str, cell_name: str, seed: int, out: str, samplers: list[str] | None = None,
            threads: int | None = None) -> str:
    """Train and evaluate one (cell, seed) with its samplers (all, or those named), and score
    its floor: the unit a launcher runs (picklable arguments). ``threads`` caps torch's."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    study = load_study(study_path)
    cell = next(c for c in study.cells() if c.name == cell_name)
    directory = train_cell(study, cell, seed, Path(out))
    for sampler in study.samplers_for(cell):
        if samplers is None or sampler.name in samplers:
            evaluate_cell(study, cell, seed, sampler, Path(out))
    score_floor(study, cell, seed, Path(out))
    return str(directory)


def collect(study: Study, out: Path) -> list[dict[str, Any]]:
    """One row per (cell, sampler, seed) with its labels, flattened metrics and fingerprint:
    only results whose fingerprint is the study's current one."""
    rows = []
    for cell in study.cells():
        for seed in study.spec.study.seeds:
            directory = run_dir(out, cell, seed)
            train = read_json(directory / "study.json")
            if train.get("fingerprint") != run_fingerprint(study, cell, seed):
                continue
            for sampler in study.samplers_for(cell):
                report = read_json(directory / f"eval_{sampler.name}.json")
                if report.get("fingerprint") != eval_fingerprint(study, cell, seed, sampler):
                    continue
                metrics = flatten_numbers(report)
                for key in ("train_seconds", "train_steps"):
                    metrics[key] = number(train.get(key))
                rows.append({"cell": cell.name, "sampler": sampler.name, "seed": seed,
                             "labels": {**dict(cell.labels), "sampler": sampler.name},
                             "metrics": metrics, "run": str(directory),
                             "fingerprint": train["fingerprint"],
                             "eval_seconds": number(report.get("eval_seconds")),
                             "eval_cpu_seconds": number(report.get("eval_cpu_seconds")),
                             "train_cpu_seconds": number(train.get("train_cpu_seconds"))})
    return rows


def collect_floors(study: Study, out: Path) -> list[tuple[list[str], list[dict[str, float]]]]:
    """The current floor scores of each data set: (the cells on it, [metrics of each seed])."""
    cells: dict[str, list[str]] = {}
    scores: dict[str, dict[int, dict[str, float]]] = {}
    for cell in study.cells():
        for seed in study.spec.study.seeds:
            target, current = floor_path(study, cell, seed, out)
            data = target.parent.name
            cells.setdefault(data, [])
            if cell.name not in cells[data]:
                cells[data].append(cell.name)
            report = read_json(target)
            if report.get("fingerprint") == current:
                scores.setdefault(data, {})[seed] = flatten_numbers(report)
    return [(cells[data], list(by_seed.values())) for data, by_seed in scores.items()]


def number(value: Any) -> float:
    """A recorded number as a float; NaN for anything else (a hand-edited record)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")


def flatten_numbers(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested report -> {"digits.fd": 21.4, ...}: the numbers that are metrics (METRICS)."""
    from corediff.evaluation.names import METRICS

    flat: dict[str, float] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, f"{prefix}{key}."))
        elif (isinstance(value, int | float) and not isinstance(value, bool)
              and f"{prefix}{key}" in METRICS):
            flat[f"{prefix}{key}"] = float(value)
    return flat
