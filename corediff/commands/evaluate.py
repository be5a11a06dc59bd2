"""``corediff eval RUN_DIR_OR_CHECKPOINT``: generate N samples and report quality metrics
(computed by :mod:`corediff.evaluation.report`); prints them and writes them as JSON
(``<run dir>/eval.json`` or ``--out``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from corediff.engine.checkpoint import atomic_write_text
from corediff.evaluation.report import evaluate_checkpoint, format_report
from corediff.paths import check_file


def main(args: argparse.Namespace) -> int:
    source = Path(args.source).expanduser()
    # by default beside the run (as LoadedCheckpoint.run_root), checked before any work
    run_root = source.parent.parent if source.parent.name == "checkpoints" else source
    out = Path(args.out) if args.out else run_root / "eval.json"
    check_file("--out" if args.out else "the output", out)
    loaded, report = evaluate_checkpoint(
        source, args.overrides, which=args.checkpoint, n=args.n, seed=args.seed,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(format_report(report))
    print(f"metrics: {out}")
    return 0
