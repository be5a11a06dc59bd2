"""corediff: compose diffusion-model methods from swappable, entry-point plugins.

The public API is imported lazily so that ``corediff --help`` and ``corediff plugins list``
start without importing torch or any plugin.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_recipe": "corediff.recipe",
    "parse_recipe": "corediff.recipe",
    "Recipe": "corediff.recipe",
    "build": "corediff.builder",
    "create": "corediff.builder",
    "train": "corediff.api",
    "load": "corediff.api",
    "Pipeline": "corediff.pipeline",
    "Generated": "corediff.pipeline",
    "Denoiser": "corediff.denoiser",
    "DataSpec": "corediff.interfaces",
    "Prediction": "corediff.interfaces",
    "SampleResult": "corediff.interfaces",
    "Step": "corediff.interfaces",
    "KINDS": "corediff.kinds",
    "list_plugins": "corediff.registry",
    "check_plugins": "corediff.registry",
    "register": "corediff.registry",
    "CorediffError": "corediff.errors",
    "ConfigError": "corediff.errors",
    "PluginError": "corediff.errors",
    "ArgumentError": "corediff.errors",
    "ArgumentTypeError": "corediff.errors",
    "ComponentConfig": "corediff.config",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'corediff' has no attribute '{name}'")
