"""``corediff eval RUN_DIR_OR_CHECKPOINT``: generate N samples and report quality metrics
(computed by :mod:`corediff.evaluation.report`); prints them and writes them as JSON
(``<run dir>/eval.json`` or ``--out``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from corediff.engine import checkpoint
from corediff.engine.checkpoint import atomic_write_text
from corediff.engine.loading import LoadedCheckpoint
from corediff.engine.tracking import Trackers, flatten_numbers
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
        reference=getattr(args, "reference", None),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    log_evaluation(loaded, report)
    print(format_report(report))
    print(f"metrics: {out}")
    return 0


def log_evaluation(loaded: LoadedCheckpoint, report: dict[str, Any]) -> None:
    """Send the metrics (``eval/<metric>``, at the checkpoint's step) to the run's ``[[log]]``
    trackers, continuing their tracker runs (opened as of the run's ``last`` step, so a
    TensorBoard resume purges nothing)."""
    recipe = loaded.pipeline.recipe
    if not recipe.log or loaded.run_root == loaded.path:
        return
    last = checkpoint.find(loaded.run_root / "checkpoints" / "last")
    state = checkpoint.load_state(last) if last is not None else loaded.state
    trackers = Trackers.open(recipe, loaded.run_root, step=max(int(state["step"]), 1))
    try:
        metrics = {k: v for k, v in report.items() if k not in {"step", "n", "seed", "sampler"}}
        trackers.scalars(flatten_numbers(metrics), int(loaded.state["step"]), prefix="eval/")
    finally:
        trackers.close()
