"""Opening a checkpoint for use (sampling, evaluation): the one way in.

:func:`open_checkpoint` finds the checkpoint (a checkpoint directory itself, or a run
directory's ``checkpoints/<which>``), rebuilds its pipeline from the stored recipe (with
``--set`` overrides applied) and DataSpec, and restores the fitted state of every component
whose type is unchanged; :func:`load_model` then loads the (EMA) weights.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from corediff.builder import DataSpec, Pipeline, build
from corediff.engine import checkpoint
from corediff.engine.distributed import resolve_device
from corediff.engine.rundir import RunDir
from corediff.errors import ConfigError
from corediff.recipe import apply_overrides, parse_recipe


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint opened for use; its weights are not loaded yet (:func:`load_model`)."""

    path: Path  #: the checkpoint directory (holding state.json)
    run_root: Path  #: its run directory, or the checkpoint directory itself when outside one
    pipeline: Pipeline  #: rebuilt from the stored recipe with the overrides applied
    state: dict[str, Any]  #: :func:`corediff.engine.checkpoint.load_state` of ``path``


def open_checkpoint(
    source: str | Path, which: str = "last", overrides: Iterable[str] = ()
) -> LoadedCheckpoint:
    """Open ``source`` (a checkpoint directory, or a run directory's ``checkpoints/<which>``)
    and rebuild its pipeline from its stored recipe with ``overrides`` applied."""
    path = _find(Path(source).expanduser(), which)
    stored = tomllib.loads((path / "recipe.toml").read_text(encoding="utf-8"))
    recipe = parse_recipe(apply_overrides(stored, overrides), source=str(path / "recipe.toml"))
    state = checkpoint.load_state(path)
    pipeline = build(recipe, data_spec=DataSpec(**state["data_spec"]))
    stored_types = {k: v.get("type") for k, v in stored["diffusion"].items()}
    for kind, component in pipeline.components().items():
        if component.config.type == stored_types.get(kind) and state["extra"].get(kind):
            component.load_extra_state(state["extra"][kind])
    run_root = path.parent.parent if path.parent.name == "checkpoints" else path
    return LoadedCheckpoint(path=path, run_root=run_root, pipeline=pipeline, state=state)


def load_model(loaded: LoadedCheckpoint, use_ema: bool) -> nn.Module:
    """The pipeline's network with the checkpoint's EMA (or raw) weights, on the recipe's
    device, in eval mode."""
    model = loaded.pipeline.model
    checkpoint.load_weights(model, loaded.path, "ema" if use_ema else "model")
    return model.to(resolve_device(loaded.pipeline.recipe.run.device)).eval()


def _find(source: Path, which: str) -> Path:
    """A checkpoint directory itself, or a run directory's ``checkpoints/<which>``."""
    for candidate in (source, RunDir(source).checkpoint(which)):
        found = checkpoint.find(candidate)
        if found is not None:
            return found
    raise ConfigError(
        f"'{source}' is neither a run directory with checkpoints/{which} nor a checkpoint "
        "directory (one holding state.json)"
    )
