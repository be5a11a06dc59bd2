"""Turn a recipe into components — the same pieces a Python user composes by hand.

    schedule    = Schedule(config)
    degradation = Degradation(config, schedule=schedule)
    param       = Parameterization(config, degradation=degradation)
    weighting   = LossWeighting(config, degradation=degradation, parameterization=param)
    sampler     = Sampler(config, degradation=degradation, parameterization=param)
    guidance    = Guidance(config, degradation=degradation, parameterization=param)
    prior       = Prior(config, degradation=degradation)
    model       = Model(config, in_channels=C, out_channels=param.output_channels(C), ...)

Which kinds exist, their order and their dependencies come from :data:`corediff.kinds.KINDS`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from corediff.errors import ConfigError
from corediff.interfaces import DataSpec
from corediff.kinds import BY_NAME, KINDS
from corediff.pipeline import Pipeline
from corediff.recipe import Problem, _lookup_model, _problems, recipe_error
from corediff.registry import registry

__all__ = ["DataSpec", "Pipeline", "build", "create", "instantiate"]

#: Keyword arguments each kind's constructor takes besides its config.
DEPENDENCIES: dict[str, tuple[str, ...]] = {kind.name: kind.dependencies for kind in KINDS}


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Build one component by kind and name; keyword arguments are its config fields and,
    for kinds with dependencies, those dependencies (e.g. ``schedule=`` for a degradation).

        >>> schedule = corediff.create("schedule", "cosine", steps=100)
        >>> blur = corediff.create("degradation", "gaussian", schedule=schedule)
    """
    cls = registry(kind).get(name)
    deps = {key: kwargs.pop(key) for key in DEPENDENCIES[kind] if key in kwargs}
    try:
        config = cls.Config(type=name, **kwargs)
    except ValidationError as exc:
        raise recipe_error(f"{kind} '{name}'", _problems(exc, cls.Config, prefix=())) from None
    return cls(config, **deps)


def build(recipe: Any, *, data_spec: DataSpec | None = None) -> Pipeline:
    """Build every component of a recipe, in the order of the kinds table. With
    ``data_spec`` the dataset is not opened (sampling from a checkpoint needs the shapes,
    not the images)."""
    built: dict[str, Any] = {"dataset": None}
    if data_spec is None:
        built["dataset"] = instantiate("dataset", recipe.data)
        data_spec = built["dataset"].spec
    for kind in KINDS:
        if kind.name == "dataset" or not kind.in_pipeline:  # loggers: opened by the engine
            continue
        available = {**built, **_model_inputs(built, data_spec)}
        config = _lookup_model(recipe, kind.table)
        built[kind.name] = instantiate(
            kind.name, config, **{dep: available[dep] for dep in kind.dependencies}
        )
    return Pipeline(recipe=recipe, data_spec=data_spec, **built)


def _model_inputs(built: dict[str, Any], spec: DataSpec) -> dict[str, Any]:
    """What a model is built from: the data's shape and the parameterization's channels."""
    if "parameterization" not in built:
        return {}
    return {
        "in_channels": spec.channels,
        "out_channels": built["parameterization"].output_channels(spec.channels),
        "image_size": spec.image_size,
        "num_classes": spec.num_classes,
    }


def instantiate(kind: str, config: Any, **deps: Any) -> Any:
    """Build one component from its validated config (and its dependencies)."""
    cls = registry(BY_NAME[kind].name).get(config.type)
    try:
        return cls(config, **deps)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a plugin refusing a combination of settings
        raise recipe_error(f"{kind} '{config.type}'", [Problem((), str(exc))]) from exc
