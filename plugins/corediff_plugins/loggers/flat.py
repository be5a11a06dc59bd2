"""Plain-data helpers shared by the first-party loggers: a nested recipe as flat
``a.b.c`` keys with tracker-friendly values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}``; lists become JSON text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float | str):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def recipe_toml(recipe: Mapping[str, Any]) -> str:
    """The resolved recipe as TOML text (as ``<run>/recipe.toml`` holds it)."""
    import tomli_w

    return tomli_w.dumps(dict(recipe))
