"""Opening a checkpoint for use (sampling, evaluation): the one way in.

:func:`open_checkpoint` finds the checkpoint (a checkpoint directory itself, or a run
directory's ``checkpoints/<which>``), rebuilds its pipeline from the stored recipe (with
``--set`` overrides applied) and DataSpec, and restores the fitted state of every component
whose type is unchanged; :func:`load_model` then loads the (EMA) weights, and
:func:`open_and_load` does both. Every bad file (state.json, recipe.toml, a weight file) is
a one-line error naming it.

A trainer may swap ``last`` (or ``best``) for a newer checkpoint while a reader opens it, so
a reader can see files of two checkpoints (a weight file that "does not match its recorded
SHA-256") or a checkpoint that vanished mid-read. Such a read is run again: a failure is
retried, at most :data:`SWAP_RETRIES` times, only when the checkpoint's ``state.json`` (its
path and bytes) changed while it was read; a failure with the checkpoint unchanged is real
(a corrupted file) and raised at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from corediff.builder import DataSpec, Pipeline, build
from corediff.engine import checkpoint
from corediff.engine.distributed import resolve_device
from corediff.engine.rundir import RunDir
from corediff.errors import ConfigError, CorediffError, TrainingError
from corediff.recipe import apply_overrides, parse_recipe, read_toml

#: How many times a read that failed while a writer swapped the checkpoint is run again.
SWAP_RETRIES = 3

_T = TypeVar("_T")


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
    and rebuild its pipeline from its stored recipe with ``overrides`` applied (read again
    if a writer swapped the checkpoint meanwhile)."""
    overrides = list(overrides)
    return _despite_swaps(source, which, lambda: _open(source, which, overrides))


def open_and_load(
    source: str | Path, which: str = "last", overrides: Iterable[str] = (),
    use_ema: bool | None = None,
) -> tuple[LoadedCheckpoint, nn.Module]:
    """:func:`open_checkpoint` then :func:`load_model` (EMA weights unless ``use_ema`` is
    False; default: the recipe's ``[sample] use_ema``), both from the same checkpoint: a
    swap by a writer between them reads both again."""
    overrides = list(overrides)

    def read() -> tuple[LoadedCheckpoint, nn.Module]:
        loaded = _open(source, which, overrides)
        ema = loaded.pipeline.recipe.sample.use_ema if use_ema is None else use_ema
        return loaded, load_model(loaded, ema)

    return _despite_swaps(source, which, read)


def _despite_swaps(source: str | Path, which: str, read: Callable[[], _T]) -> _T:
    """``read()``, run again (at most :data:`SWAP_RETRIES` times) when it failed while the
    checkpoint it reads was replaced; a failure on an unchanged checkpoint is raised."""
    attempt = 0
    while True:
        before = _fingerprint(source, which)
        try:
            return read()
        except CorediffError:
            if attempt >= SWAP_RETRIES or _fingerprint(source, which) == before:
                raise
        attempt += 1


def _fingerprint(source: str | Path, which: str) -> tuple[Any, ...]:
    """What identifies the checkpoint a read would find now: its path, its state.json's
    inode and change time (every swap makes new ones) and bytes, or the error finding it
    gives."""
    try:
        path = _find(Path(source).expanduser(), which)
        info = os.stat(path / "state.json")
        return (str(path), info.st_dev, info.st_ino, info.st_ctime_ns,
                checkpoint._read_bytes(path, "state.json"))
    except (CorediffError, OSError) as exc:
        return ("error", str(exc))


def _open(source: str | Path, which: str, overrides: list[str]) -> LoadedCheckpoint:
    """:func:`open_checkpoint`, once."""
    path = _find(Path(source).expanduser(), which)
    stored = _stored_recipe(path)
    recipe = parse_recipe(apply_overrides(stored, overrides), source=str(path / "recipe.toml"))
    state = checkpoint.load_state(path, validate=True)
    pipeline = build(recipe, data_spec=DataSpec(**state["data_spec"]))
    diffusion = stored.get("diffusion")
    stored_types = {k: v.get("type") for k, v in diffusion.items() if isinstance(v, dict)
                    } if isinstance(diffusion, dict) else {}
    restored = set()
    for kind, component in pipeline.components().items():
        if component.config.type == stored_types.get(kind) and state["extra"].get(kind):
            restored.add(kind)
            try:
                component.load_extra_state(state["extra"][kind])
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
                raise TrainingError(
                    f"checkpoint '{path}': the stored state of its {kind} "
                    f"'{component.config.type}' cannot be restored: "
                    f"{' '.join(str(exc).split())[:300]}"
                ) from None
    fit_new_components(pipeline, restored)
    run_root = path.parent.parent if path.parent.name == "checkpoints" else path
    return LoadedCheckpoint(path=path, run_root=run_root, pipeline=pipeline, state=state)


def fit_new_components(pipeline: Pipeline, restored: set[str]) -> None:
    """Fit the components the checkpoint holds no state for that learn from data (e.g. a
    fitted prior chosen with ``--set`` at sampling time) on the training images, exactly as
    training would have (:func:`corediff.engine.trainer.fit_images`)."""
    from corediff.engine.trainer import fit_images
    from corediff.interfaces import Component

    fresh = [c for kind, c in pipeline.components().items()
             if kind not in restored and type(c).fit is not Component.fit]
    if fresh:
        images = fit_images(pipeline)
        for component in fresh:
            component.fit(images)


def load_model(loaded: LoadedCheckpoint, use_ema: bool) -> nn.Module:
    """The pipeline's network with the checkpoint's EMA (or raw) weights, on the recipe's
    device, in eval mode."""
    model = loaded.pipeline.model
    which = "ema" if use_ema else "model"
    checkpoint.load_weights(model, loaded.path, which)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise TrainingError(f"checkpoint '{loaded.path}': {which}.safetensors holds "
                                f"weights that are not finite (NaN or infinity) in '{name}'; "
                                "sample from another checkpoint (e.g. --checkpoint best)")
    return model.to(resolve_device(loaded.pipeline.recipe.run.device)).eval()


def _stored_recipe(path: Path) -> dict[str, Any]:
    """The checkpoint's recipe.toml as TOML data (not validated yet)."""
    return read_toml(path / "recipe.toml", f"checkpoint '{path}': recipe.toml",
                     missing="is missing; the checkpoint cannot be rebuilt without the "
                     "recipe it was trained with")


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
