"""Train and load from Python — the same engine the CLI drives.

    import corediff

    recipe = corediff.load_recipe("recipes/quickstart.toml", overrides=["train.steps=100"])
    corediff.train(recipe, run_dir="runs/mine")                 # or a built Pipeline
    pipeline = corediff.load("runs/mine", which="last")          # weights loaded (EMA)
    images = pipeline.sample(16, labels=3, seed=0)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from corediff.errors import ArgumentError, ArgumentTypeError
from corediff.pipeline import Pipeline


def check_path(name: str, value: object) -> None:
    """``value`` must be a str or Path without a NUL character."""
    if not isinstance(value, str | Path):
        raise ArgumentTypeError(f"{name} must be a path (str or pathlib.Path), not "
                                f"{type(value).__name__}")
    if "\0" in str(value):
        raise ArgumentError(f"{name} {str(value)!r} contains a NUL character (U+0000), which "
                            "no path may hold")


def train(
    recipe: object, *, run_dir: str | Path | None = None, resume: bool = False,
    overrides: Iterable[str] = (), overwrite: bool = False, force: bool = False,
) -> Pipeline:
    """Train into ``run_dir`` (default: ``<run.root>/<run.name>``) and return the trained
    pipeline with its EMA weights (as :func:`load` of the ``last`` checkpoint gives it).

    ``recipe`` is a path to a TOML recipe (``overrides`` applied), a validated Recipe, or a
    Pipeline built from one (components composed in Python train as they are, and the stored
    recipe is derived from them: ``Pipeline.recipe``; a composition a recipe would refuse is
    refused here, before the run directory is touched). ``resume`` continues from the run's
    ``last`` checkpoint (``force``: even if the recipe changes the objective); ``overwrite``
    starts over in a run directory that holds a run.
    Single process (use ``torchrun -m corediff train`` for DDP).
    """
    from corediff.engine import distributed
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import run_training
    from corediff.recipe import Recipe, load_recipe

    if not isinstance(recipe, str | Path | Recipe | Pipeline):
        raise ArgumentTypeError(f"recipe must be a path to a TOML recipe, a Recipe or a "
                                f"Pipeline, not {type(recipe).__name__}")
    if isinstance(recipe, str | Path):
        check_path("recipe", recipe)
    if run_dir is not None:
        check_path("run_dir", run_dir)
    if isinstance(recipe, str | Path):
        recipe = load_recipe(recipe, overrides)
    settings = recipe.recipe if isinstance(recipe, Pipeline) else recipe
    root = Path(run_dir) if run_dir is not None else Path(settings.run.root) / settings.run.name
    context = distributed.setup(settings.run.device, settings.train.collective_timeout_s)
    try:
        run_training(recipe, RunDir(root), context, resume=resume, overwrite=overwrite,
                     force=force)
    finally:
        distributed.teardown(context)
    return load(root, which="last")


def load(
    source: str | Path, *, which: str = "best", overrides: Iterable[str] = (),
    use_ema: bool | None = None,
) -> Pipeline:
    """A run directory's checkpoint (``which`` = "best" or "last") or a checkpoint directory,
    rebuilt from its stored recipe with ``overrides`` (e.g. another sampler) and its weights
    loaded (EMA unless ``use_ema`` is False, default: the recipe's ``[sample] use_ema``), on
    the recipe's device, in eval mode."""
    from corediff.engine.loading import open_and_load

    check_path("source", source)
    if which not in ("best", "last"):
        raise ArgumentError(f"which must be 'best' or 'last', not {which!r}")
    if isinstance(overrides, str):
        raise ArgumentTypeError("overrides must be a list of 'KEY=VALUE' strings, not one string")
    loaded, _ = open_and_load(source, which, overrides, use_ema)
    return loaded.pipeline
