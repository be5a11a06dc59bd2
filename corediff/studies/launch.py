"""Running a whole study: validate every cell, run each (cell, seed) with a launcher, then
write the report.

Launchers: ``local`` runs the cells in this machine's processes (one after another, or
``jobs`` at a time in worker processes); ``submitit-local`` runs them as local processes and
``slurm`` submits one SLURM job per (cell, seed), both through submitit (an existing scheduler
client, not ours). With ``jobs`` = N (local and submitit-local) at most N cells run at once and
each gets its share of the CPU threads. Finished runs with the current fingerprint are reused,
interrupted ones resumed, changed ones trained again (see :mod:`corediff.studies.runner`).
``only`` restricts the work to the (cell, sampler) rows a selector matches; ``dry_run`` lists
what would run and its estimated cost, and runs nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corediff.errors import ConfigError, CorediffError
from corediff.studies import runner
from corediff.studies.config import Study, load_study, matches, selector_problem
from corediff.studies.report import write_report

LAUNCHERS = ("local", "submitit-local", "slurm")


class StudyError(CorediffError):
    """A cell of a study failed."""


#: One unit of work: (cell name, seed, the samplers to evaluate).
Job = tuple[str, int, list[str]]


def run_study(
    path: str | Path, *, out: str | Path | None = None, report: str | Path | None = None,
    launcher: str = "local", jobs: int = 1, only: str | None = None, dry_run: bool = False,
    echo: Callable[[str], Any] = print,
) -> Path | None:
    """Run a study file; returns the path of its RESULTS.md (None for a dry run)."""
    study = load_study(path)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give a number of parallel cells, 1 or more")
    if only is not None and (problem := selector_problem(only, study.design())):
        raise ConfigError(f"--only: {problem}")
    runner.validate_cells(study)
    out = Path(out) if out is not None else Path("runs") / "studies" / study.spec.study.name
    work = plan(study, only)
    if dry_run:
        for line in describe_plan(study, out, work):
            echo(line)
        return None
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if launcher == "local" and jobs == 1:
        for cell, seed, samplers in work:
            runner.run_one(str(study.path), cell, seed, str(out), samplers)
    elif launcher == "local":
        _pool(study, work, out, jobs, threads)
    else:
        _submit(study, work, out, launcher, jobs, threads)
    rows = runner.collect(study, out)
    fingerprints = {cell.name: {seed: runner.run_fingerprint(study, cell, seed)
                                for seed in study.spec.study.seeds} for cell in study.cells()}
    runs = {r["run"]: r for r in rows}
    compute = {"train": sum(r["metrics"]["train_seconds"] for r in runs.values()),
               "evaluate": sum(r["eval_seconds"] for r in rows),
               "cpu": sum(r["train_cpu_seconds"] for r in runs.values())
               + sum(r["eval_cpu_seconds"] for r in rows)}
    return write_report(study, out, Path(report) if report is not None else out, rows,
                        runner.collect_floors(study, out), fingerprints, compute)


def plan(study: Study, only: str | None) -> list[Job]:
    """Every (cell, seed) to run, with the samplers ``only`` keeps (all without it)."""
    work = []
    for cell in study.cells():
        samplers = [s.name for s in study.samplers_for(cell)
                    if only is None or matches({**dict(cell.labels), "sampler": s.name}, only)]
        if samplers:
            work += [(cell.name, seed, samplers) for seed in study.spec.study.seeds]
    return work


def describe_plan(study: Study, out: Path, work: list[Job]) -> list[str]:
    """What a run would do for each (cell, seed) and sampler, and its estimated cost."""
    cells = {cell.name: cell for cell in study.cells()}
    samplers = {s.name: s for s in study.spec.samplers}
    lines, steps, evaluations = [], 0, 0
    for name, seed, names in work:
        cell = cells[name]
        directory = runner.run_dir(out, cell, seed)
        record = runner.read_json(directory / "study.json")
        current = runner.run_fingerprint(study, cell, seed)
        recipe = runner.cell_recipe(study, cell, seed)
        if record.get("fingerprint") == current and "train_seconds" in record:
            status = "reuse"
        else:
            status = "resume" if record.get("fingerprint") == current else (
                "train again (settings changed)" if directory.exists() else "train")
            steps += recipe.train.steps
        lines.append(f"{name} seed {seed}: {status} ({recipe.train.steps} steps of "
                     f"{recipe.train.batch_size}; fingerprint {current})")
        for sampler in names:
            target = directory / f"eval_{sampler}.json"
            fresh = runner.read_json(target).get("fingerprint") == runner.eval_fingerprint(
                study, cell, seed, samplers[sampler])
            action = "reuse" if fresh and status == "reuse" else "evaluate"
            evaluations += action == "evaluate"
            lines.append(f"    {sampler}: {action} ({study.spec.study.n} samples)")
    lines.append(f"estimated cost: {steps} training steps and {evaluations} evaluations of "
                 f"{study.spec.study.n} samples{_seconds(study, out, steps, evaluations)}")
    return lines


def _seconds(study: Study, out: Path, steps: int, evaluations: int) -> str:
    """', about N minutes' from this study's finished runs and evaluations, when it has any."""
    done = runner.collect(study, out)
    if not done or not (steps or evaluations):
        return " (no finished run of this study to time it by)" if steps or evaluations else ""
    per_step = [r["metrics"]["train_seconds"] / r["metrics"]["train_steps"] for r in done
                if r["metrics"]["train_steps"] > 0]
    per_step = [v for v in per_step if math.isfinite(v)]
    per_eval = [r["eval_seconds"] for r in done if math.isfinite(r["eval_seconds"])]
    seconds = (steps * sum(per_step) / max(len(per_step), 1)
               + evaluations * sum(per_eval) / max(len(per_eval), 1))
    return f", about {seconds / 60:.0f} minutes at this study's measured speed"


def _pool(study: Study, work: list[Job], out: Path, jobs: int, threads: int) -> None:
    """Run the cells in ``jobs`` worker processes, ``threads`` torch threads each."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [(cell, seed, pool.submit(runner.run_one, str(study.path), cell, seed,
                                            str(out), samplers, threads))
                   for cell, seed, samplers in work]
        failures = []
        for cell, seed, future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - the worker's own failure, reported below
                failures.append(f"  {cell} seed {seed}: {str(exc).strip().splitlines()[-1]}")
    if failures:
        raise StudyError(f"{len(failures)} of {len(work)} study jobs failed:\n"
                         + "\n".join(failures))


def _submit(study: Study, work: list[Job], out: Path, launcher: str, jobs: int,
            threads: int) -> None:
    import submitit

    folder = out / "submitit"
    slurm = study.spec.slurm
    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            timeout_min=slurm.timeout_min, gpus_per_node=slurm.gpus_per_node,
            cpus_per_task=slurm.cpus_per_task, slurm_partition=slurm.partition,
            name=f"corediff-{study.spec.study.name}",
        )
        window, threads_each = len(work), None
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=slurm.timeout_min)
        window, threads_each = jobs, threads
    failures: list[str] = []
    running: list[tuple[str, int, Any]] = []
    for cell, seed, samplers in work:
        if len(running) >= window:
            _wait(running.pop(0), failures)
        running.append((cell, seed, executor.submit(runner.run_one, str(study.path), cell, seed,
                                                    str(out), samplers, threads_each)))
    for item in running:
        _wait(item, failures)
    if failures:
        raise StudyError(f"{len(failures)} of {len(work)} study jobs failed (logs in "
                         f"{folder}):\n" + "\n".join(failures))


def _wait(item: tuple[str, int, Any], failures: list[str]) -> None:
    cell, seed, job = item
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's own failure
        failures.append(f"  {cell} seed {seed} (job {job.job_id}): "
                        f"{str(exc).strip().splitlines()[-1]}")
