"""Running a whole study: validate every cell, run each (cell, seed) with a launcher, then
write the report.

Launchers: ``local`` runs the cells one after another in this process; ``submitit-local``
runs them as parallel local processes and ``slurm`` submits one SLURM job per (cell, seed),
both through submitit (an existing scheduler client, not ours). Finished cells are skipped and
interrupted ones resumed, so running a study again continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from corediff.errors import CorediffError
from corediff.studies.config import Study, load_study
from corediff.studies.report import write_report
from corediff.studies.runner import collect, run_one, validate_cells

LAUNCHERS = ("local", "submitit-local", "slurm")


class StudyError(CorediffError):
    """A cell of a study failed."""


def run_study(
    path: str | Path, *, out: str | Path | None = None, report: str | Path | None = None,
    launcher: str = "local",
) -> Path:
    """Run a study file; returns the path of its RESULTS.md."""
    study = load_study(path)
    validate_cells(study)
    out = Path(out) if out is not None else Path("runs") / "studies" / study.spec.study.name
    jobs = [(cell.name, seed) for cell in study.cells() for seed in study.spec.study.seeds]
    if launcher == "local":
        for cell, seed in jobs:
            run_one(str(study.path), cell, seed, str(out))
    else:
        _submit(study, jobs, out, launcher)
    rows = collect(study, out)
    return write_report(study, out, Path(report) if report is not None else out, rows)


def _submit(study: Study, jobs: list[tuple[str, int]], out: Path, launcher: str) -> None:
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
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=slurm.timeout_min)
    submitted = [(cell, seed, executor.submit(run_one, str(study.path), cell, seed, str(out)))
                 for cell, seed in jobs]
    failures = []
    for cell, seed, job in submitted:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's own failure
            failures.append(f"  {cell} seed {seed} (job {job.job_id}): "
                            f"{str(exc).strip().splitlines()[-1]}")
    if failures:
        raise StudyError(f"{len(failures)} of {len(jobs)} study jobs failed (logs in "
                         f"{folder}):\n" + "\n".join(failures))
