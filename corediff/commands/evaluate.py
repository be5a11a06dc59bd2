"""``corediff eval RUN_DIR_OR_CHECKPOINT``: generate N samples and report quality metrics
(computed by :mod:`corediff.evaluation.report`); prints them and writes them as JSON
(``<run dir>/eval.json`` or ``--out``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from corediff.engine.checkpoint import atomic_write_text
from corediff.evaluation.report import evaluate_checkpoint, format_report


def main(args: argparse.Namespace) -> int:
    loaded, report = evaluate_checkpoint(
        Path(args.source).expanduser(), args.overrides, which=args.checkpoint,
        n=args.n, seed=args.seed,
    )
    out = Path(args.out) if args.out else loaded.run_root / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(format_report(report))
    print(f"metrics: {out}")
    return 0
