"""The recipe's experiment trackers (``[[log]]``, :class:`corediff.interfaces.Logger`) for one
run directory, opened by the trainer on rank 0 and by ``corediff eval``.

    <run>/trackers/                  what the loggers keep locally (event files, offline runs)
    <run>/trackers/state.json        per logger, what identifies its tracker run

A run that starts at step 0 opens new tracker runs; a resumed run (a later step) gives each
logger what its ``start`` returned before, so it continues the same tracker run. A recipe
without ``[[log]]`` opens nothing (``metrics.csv`` is written either way).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corediff.builder import instantiate
from corediff.engine import safe_files
from corediff.engine.checkpoint import atomic_write_text
from corediff.errors import TrainingError

FOLDER, STATE = "trackers", "state.json"


class Trackers:
    """The loggers of one run; every call goes to each of them (none: nothing happens)."""

    def __init__(self, loggers: list[Any] | None = None) -> None:
        self.loggers = loggers or []

    @classmethod
    def open(cls, recipe: Any, run_root: str | Path, *, step: int,
             tags: Mapping[str, str] | None = None) -> Trackers:
        """Start the recipe's loggers for a session beginning at ``step`` (0: a new run)."""
        configs = list(getattr(recipe, "log", None) or [])
        if not configs:
            return cls()
        from corediff.recipe import recipe_to_dict

        folder = safe_files.ensure_dir(Path(run_root) / FOLDER)
        state_path = folder / STATE
        stored = _read_state(state_path) if step > 0 else {}
        tags = {"run": recipe.run.name, "seed": str(recipe.run.seed),
                **(recipe.run.tags or {}), **(tags or {})}
        data, state, loggers = recipe_to_dict(recipe), {}, []
        try:
            for index, config in enumerate(configs):
                key = f"{index}:{config.type}"
                logger = instantiate("logger", config, run_dir=folder)
                loggers.append(logger)
                state[key] = logger.start(data, tags=tags, step=step, resume=stored.get(key))
        except Exception as exc:
            cls(loggers).close()
            raise TrainingError(f"logger '{config.type}' [log.{index}] could not start: "
                                f"{type(exc).__name__}: {exc}") from exc
        atomic_write_text(state_path, json.dumps(state, indent=1) + "\n")
        return cls(loggers)

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Numbers only (bools, None and text are left out), keys prefixed."""
        numbers = {f"{prefix}{key}": float(value) for key, value in values.items()
                   if isinstance(value, int | float) and not isinstance(value, bool)}
        if numbers:
            for logger in self.loggers:
                logger.log_scalars(numbers, step)

    def image_file(self, name: str, path: Path, step: int) -> None:
        """A PNG written by the run (a sample grid), as a uint8 [H, W, C] array."""
        if not self.loggers:
            return
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        for logger in self.loggers:
            logger.log_image(name, pixels, step)

    def close(self) -> None:
        for logger in self.loggers:
            try:
                logger.close()
            except Exception:  # closing one tracker must not hide another's
                pass
        self.loggers = []


def _read_state(path: Path) -> dict[str, Any]:
    """What the loggers returned in the run's previous session (empty when none or bad)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def flatten_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested report (``corediff eval``'s) as ``a/b`` keys."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat
