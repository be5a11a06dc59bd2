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

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from corediff.config import ComponentConfig
from corediff.errors import ArgumentError, ArgumentTypeError, ConfigError
from corediff.interfaces import Component, DataSpec
from corediff.kinds import BY_NAME, KINDS
from corediff.pipeline import Pipeline, model_inputs
from corediff.recipe import (
    Problem,
    _lookup_model,
    _problems,
    check_compatibility,
    check_components,
    recipe_error,
)
from corediff.registry import registry

__all__ = ["DataSpec", "Pipeline", "build", "create", "instantiate"]

#: Keyword arguments each kind's constructor takes besides its config.
DEPENDENCIES: dict[str, tuple[str, ...]] = {kind.name: kind.dependencies for kind in KINDS}


def create(kind: str, config: str | ComponentConfig | Mapping[str, Any], /,
           **kwargs: Any) -> Any:
    """Build one component by kind and plugin name, or from a config object (a plugin's
    Config, or a mapping such as a recipe table, whose ``type`` names the plugin); keyword
    arguments are config fields (over the config object's) and, for kinds with
    dependencies, those dependencies (e.g. ``schedule=`` for a degradation).

        >>> schedule = corediff.create("schedule", "cosine", steps=100)
        >>> blur = corediff.create("degradation", "gaussian", schedule=schedule)
        >>> again = corediff.create("degradation", blur.config, schedule=schedule)

    The component is checked against the dependencies given (and theirs) as a recipe is, and
    refused with the recipe's sentence: a sampler that needs a Gaussian degradation is not
    created on a blur.
    """
    deps = {key: kwargs.pop(key) for key in DEPENDENCIES[registry(kind).kind] if key in kwargs}
    cls, config = _config(kind, config, kwargs)
    composed = _composition(kind, cls, config, deps)
    problems = check_compatibility(*composed) or check_components(*composed, partial=True)
    if problems:
        raise recipe_error(f"{kind} '{config.type}'", problems)
    return cls(config, **deps)


def _config(kind: str, given: Any, fields: dict[str, Any]) -> tuple[type, ComponentConfig]:
    """The plugin class and its validated config from a name and fields, or a config object
    and the fields that override it."""
    if isinstance(given, ComponentConfig):
        fields = {**given.model_dump(), **fields}
        given = given.type
    elif isinstance(given, Mapping):
        fields = {**given, **fields}
        given = fields.get("type")
        if not isinstance(given, str):
            raise ArgumentError(f"a {kind} config mapping needs 'type', the name of a "
                                f"registered {kind} (got {given!r})")
    elif not isinstance(given, str):
        raise ArgumentTypeError(f"create: the {kind} must be a plugin name, a config object "
                                f"or a mapping, not {type(given).__name__}")
    cls = registry(kind).get(given)
    try:
        return cls, cls.Config.model_validate({**fields, "type": given})
    except ValidationError as exc:
        raise recipe_error(f"{kind} '{given}'", _problems(exc, cls.Config, prefix=())) from None


def _composition(kind: str, cls: type, config: ComponentConfig, deps: Mapping[str, Any]
                 ) -> tuple[dict[tuple[str, ...], type], dict[tuple[str, ...], ComponentConfig]]:
    """The component and every component reachable through its dependencies, by recipe
    table, as a recipe's (classes, configs) for its checks."""
    table = BY_NAME[kind].table
    classes, configs = {table: cls}, {table: config}
    reachable = list(deps.items())  # breadth first: a dependency given wins over a deeper one
    while reachable:
        name, component = reachable.pop(0)
        if name not in BY_NAME or not isinstance(component, Component):
            continue
        table = BY_NAME[name].table
        if table not in classes:
            classes[table], configs[table] = type(component), component.config
            reachable += [(dep, getattr(component, dep, None))
                          for dep in BY_NAME[name].dependencies]
    return classes, configs


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
    """What a model is built from, once the parameterization is built."""
    return model_inputs(spec, built["parameterization"]) if "parameterization" in built else {}


def instantiate(kind: str, config: Any, **deps: Any) -> Any:
    """Build one component from its validated config (and its dependencies)."""
    cls = registry(BY_NAME[kind].name).get(config.type)
    try:
        return cls(config, **deps)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a plugin refusing a combination of settings
        raise recipe_error(f"{kind} '{config.type}'", [Problem((), str(exc))]) from exc
