"""``corediff run RECIPE`` (train, then sample a grid) and ``corediff train RECIPE``."""

from __future__ import annotations

import argparse
from pathlib import Path

from corediff.engine import distributed
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import run_training
from corediff.paths import check_folder
from corediff.recipe import load_recipe


def _train(args: argparse.Namespace, *, then_sample: bool) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    root = Path(args.run_dir or Path(recipe.run.root) / recipe.run.name)
    check_folder("--run-dir" if args.run_dir else "the run folder (run.root/run.name)", root)
    run_dir = RunDir(root)
    context = distributed.setup(recipe.run.device, recipe.train.collective_timeout_s)
    try:
        trainer = run_training(recipe, run_dir, context, resume=args.resume,
                               overwrite=args.overwrite, force=args.force)
        if context.is_main:
            if then_sample:
                trainer.sample_grid(run_dir.sample_grid())
                print(f"samples: {run_dir.sample_grid()}")
            print(f"checkpoint: {run_dir.checkpoint('last')}")
    finally:
        distributed.teardown(context)
    return 0


def run(args: argparse.Namespace) -> int:
    return _train(args, then_sample=True)


def train(args: argparse.Namespace) -> int:
    return _train(args, then_sample=False)
