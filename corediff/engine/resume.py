"""What ``--resume`` may change in a recipe.

A resumed run continues the same objective with the same network, so the new recipe is
compared with the one stored in the checkpoint. Keys that only say how long, how often, how
fast or where (:data:`MAY_CHANGE`) are applied for real and recorded in
``<run>/resume_log.jsonl``; any other difference — a component's type or config, the data,
the model, the batch, the precision, the seed — changes what the weights mean and is refused
with the list of differing keys, unless ``--force`` accepts it explicitly.
"""

from __future__ import annotations

import json
import time
from typing import Any

from corediff.engine import safe_files
from corediff.engine.rundir import RunDir
from corediff.errors import TrainingError

#: Dotted keys (or prefixes ending in ".") a resumed run may change.
MAY_CHANGE = (
    "train.steps", "train.max_minutes", "train.log_every", "train.checkpoint_every",
    "train.sample_every",
    "train.lr", "train.warmup_steps", "train.min_lr_ratio", "train.num_workers",
    "train.compile", "train.prefetch_factor", "train.factor_cache",
    "train.factor_cache_device_gib", "train.factor_cache_host_gib", "sample.", "run.device",
    "run.name", "run.root", "run.tags.", "log",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (stored value, new value) for every key whose value differs (a missing
    key is None)."""
    old, now = flatten(stored), flatten(new)
    return {key: (old.get(key), now.get(key)) for key in sorted(old.keys() | now.keys())
            if old.get(key) != now.get(key)}


def may_change(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed))
               for allowed in MAY_CHANGE)


def check_resume(
    stored: dict[str, Any], new: dict[str, Any], *, force: bool, where: str
) -> dict[str, tuple[Any, Any]]:
    """The differences between the checkpoint's recipe and the new one; raises when one
    changes the objective and ``force`` is false."""
    changed = differences(stored, new)
    refused = {key: values for key, values in changed.items() if not may_change(key)}
    if refused and not force:
        lines = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, (old, new) in refused.items())
        raise TrainingError(
            f"--resume: the recipe differs from the one {where} was trained with in keys that "
            f"change the objective or the weights' meaning:\n{lines}\n"
            "Resume with the stored recipe, or accept the change with --resume --force."
        )
    return changed


def log_resume(run: RunDir, step: int, changed: dict[str, tuple[Any, Any]], force: bool) -> None:
    """Append one JSON line to ``<run>/resume_log.jsonl`` (never through a link or a FIFO)."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step, "forced": force,
             "changed": {key: list(values) for key, values in changed.items()}}
    with safe_files.open_append(run.root / "resume_log.jsonl") as handle:
        handle.write(json.dumps(entry) + "\n")
