"""``corediff study STUDY.toml``: run a declarative study (see corediff.studies.config)."""

from __future__ import annotations

import argparse

from corediff.studies.launch import run_study


def main(args: argparse.Namespace) -> int:
    results = run_study(args.study, out=args.out, report=args.report, launcher=args.launcher,
                        jobs=args.jobs, only=args.only, dry_run=args.dry_run)
    if results is not None:
        print(f"results: {results}")
    return 0
