"""``corediff study STUDY.toml``: run a declarative study (see corediff.studies.config).

Before anything runs, ``--out`` and ``--report`` must be folders that can be made and
written, and ``--launcher slurm`` needs SLURM's ``sbatch`` and ``srun`` on the PATH."""

from __future__ import annotations

import argparse
import shutil

from corediff.errors import ConfigError
from corediff.paths import check_folder
from corediff.studies.launch import run_study


def main(args: argparse.Namespace) -> int:
    for flag, folder in (("--out", args.out), ("--report", args.report)):
        if folder is not None:
            check_folder(flag, folder)
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if args.launcher == "slurm" and missing and not args.dry_run:
        raise ConfigError(f"--launcher slurm needs SLURM's {' and '.join(missing)} on the "
                          "PATH, which this machine lacks; run on a SLURM login node, or use "
                          "--launcher local or submitit-local")
    results = run_study(args.study, out=args.out, report=args.report, launcher=args.launcher,
                        jobs=args.jobs, only=args.only, dry_run=args.dry_run)
    if results is not None:
        print(f"results: {results}")
    return 0
