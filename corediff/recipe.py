"""Recipes: typed, validated TOML that names the components of a diffusion method.

A recipe names registered plugins only (a ``type`` per component table) — never an import
path — so a stranger's recipe cannot run arbitrary code. Loading resolves each ``type``
through its registry (importing only the plugins named), validates the table against that
plugin's Config, then checks that the components are compatible. Every problem is reported
at once, each naming the file, the table and key (``[diffusion.sampler] steps``) and why.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError

from corediff.config import ComponentConfig, StrictModel
from corediff.errors import ConfigError, PluginError, did_you_mean
from corediff.registry import registry
from corediff.sections import RunConfig, SampleConfig, TrainConfig

Component = SerializeAsAny[ComponentConfig]


class DiffusionSection(StrictModel):
    """[diffusion]: the method — one table per swappable part."""

    schedule: Component = Field(description="Maps step t to ᾱ_t, a blur width or a rank.")
    degradation: Component = Field(description="The forward process D(x0, t).")
    parameterization: Component = Field(description="What the network predicts.")
    loss_weighting: Component = Field(description="Per-step weight of the training loss.")
    sampler: Component = Field(description="The reverse process used to generate.")
    prior: Component = Field(description="Where generation starts (x at step T).")


class Recipe(StrictModel):
    """A whole experiment: data, network, diffusion method, training, sampling, run."""

    data: Component = Field(description="The training dataset.")
    model: Component = Field(description="The denoising network.")
    diffusion: DiffusionSection
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    run: RunConfig = RunConfig()


#: Where each component table lives in a recipe, and its kind.
COMPONENT_TABLES: dict[tuple[str, ...], str] = {
    ("data",): "dataset",
    ("model",): "model",
    ("diffusion", "schedule"): "schedule",
    ("diffusion", "degradation"): "degradation",
    ("diffusion", "parameterization"): "parameterization",
    ("diffusion", "loss_weighting"): "loss_weighting",
    ("diffusion", "sampler"): "sampler",
    ("diffusion", "prior"): "prior",
}


@dataclass
class Problem:
    """One thing wrong with a recipe, at a table path and key."""

    loc: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        *table, key = self.loc or ("",)
        where = f"[{'.'.join(map(str, table))}] {key}" if table else str(key)
        return f"{where}: {self.message}" if where else self.message


def recipe_error(source: str, problems: Iterable[Problem | str]) -> ConfigError:
    lines = "\n".join(f"  {p}" for p in problems)
    return ConfigError(f"{source}: invalid recipe\n{lines}")


# -- loading -----------------------------------------------------------------------------
def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read a TOML recipe, apply ``KEY=VALUE`` overrides, validate it and check it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"recipe file '{path}' not found") from None
    except OSError as exc:
        raise ConfigError(f"recipe file '{path}' cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return parse_recipe(apply_overrides(data, overrides), source=str(path))


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (TOML values;
    anything that does not parse as TOML is taken as a string).

    Changing a component's ``type`` (``diffusion.sampler.type=ddpm``) keeps only the keys
    the new plugin's Config also has (``steps``, ``clip_x0``), not the old plugin's own; type
    overrides are applied first, so ``--set diffusion.sampler.steps=20`` may come in any order.
    """
    data = _deep_copy(data)
    for override in sorted(overrides, key=lambda o: not o.partition("=")[0].endswith(".type")):
        key, sep, raw = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"--set '{override}': expected KEY=VALUE with a dotted key, e.g. train.steps=10"
            )
        try:
            value = tomllib.loads(f"value = {raw.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        table = data
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set '{override}': '{prefix}' is a value, not a table")
        if parts[-1] == "type" and tuple(parts[:-1]) in COMPONENT_TABLES:
            _retype(table, COMPONENT_TABLES[tuple(parts[:-1])], value)
        table[parts[-1]] = value
    return data


def _retype(table: dict[str, Any], kind: str, new_type: Any) -> None:
    """Drop the keys of a component table that its new plugin does not know."""
    if table.get("type") == new_type:
        return
    try:
        fields = registry(kind).get(str(new_type)).Config.model_fields
    except PluginError:
        fields = {}  # the unknown name is reported when the recipe is validated
    for key in [key for key in table if key not in fields]:
        del table[key]


def parse_recipe(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a recipe given as nested dicts (as read from TOML)."""
    data = _deep_copy(dict(data))
    problems: list[Problem] = []
    classes: dict[tuple[str, ...], type] = {}
    for table_path, kind in COMPONENT_TABLES.items():
        parent = _lookup(data, table_path[:-1])
        table = parent.get(table_path[-1]) if isinstance(parent, dict) else None
        if not isinstance(table, dict):
            continue  # missing or of the wrong type: the structural pass reports it
        resolved = _resolve_component(table_path, kind, table, problems)
        if resolved is None:  # reported; keep the structure valid so nothing else repeats
            parent[table_path[-1]] = ComponentConfig.model_construct(type=str(table.get("type")))
            continue
        parent[table_path[-1]], classes[table_path] = resolved
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, Recipe, prefix=())
        recipe = None
    if problems:
        raise recipe_error(source, problems)
    incompatible = check_compatibility(classes)
    if incompatible:
        raise recipe_error(source, incompatible)
    return recipe  # type: ignore[return-value]


def _resolve_component(
    table_path: tuple[str, ...], kind: str, table: dict[str, Any], problems: list[Problem]
) -> tuple[ComponentConfig, type] | None:
    names = registry(kind).names()
    name = table.get("type")
    if not isinstance(name, str):
        problems.append(Problem(
            (*table_path, "type"),
            f"missing or not a string; name a registered {kind}: {', '.join(names)}",
        ))
        return None
    try:
        cls = registry(kind).get(name)
    except PluginError as exc:
        problems.append(Problem((*table_path, "type"), str(exc)))
        return None
    try:
        return cls.Config.model_validate(table), cls
    except ValidationError as exc:
        problems.extend(_problems(exc, cls.Config, prefix=table_path))
        return None


def _problems(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[str, ...]
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(part for part in err["loc"] if not _is_union_tag(part))
        problems.append(Problem((*prefix, *loc), _message(err, model, loc)))
    return problems


def _is_union_tag(part: str | int) -> bool:
    """Pydantic inserts type names like 'int' or 'function-after[...]' into union locs."""
    return isinstance(part, str) and ("[" in part or part in {"int", "float", "str", "bool"})


def _message(err: Mapping[str, Any], model: type[BaseModel], loc: tuple) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = sorted(owner.model_fields) if owner else []
        what = "table" if isinstance(err.get("input"), dict) else "key"
        return (
            f"unknown {what}.{did_you_mean(str(loc[-1]), allowed)} "
            f"Allowed: {', '.join(allowed)}."
        )
    if kind == "missing":
        field_model = _model_at(model, loc)
        is_table = field_model is not None or _is_component(model, loc)
        return "required table is missing" if is_table else "required key is missing"
    return f"{err['msg']} (got {err.get('input')!r})"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = fields[part].annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_component(model: type[BaseModel], loc: tuple) -> bool:
    return model is Recipe and tuple(map(str, loc)) in COMPONENT_TABLES


def check_compatibility(classes: Mapping[tuple[str, ...], type]) -> list[str]:
    """One sentence per unmet requirement between the recipe's components."""
    by_kind = {COMPONENT_TABLES[path]: (path, cls) for path, cls in classes.items()}
    sentences = []
    for path, cls in classes.items():
        for kind, needed in getattr(cls, "requires", {}).items():
            if kind not in by_kind:
                continue
            other_path, other = by_kind[kind]
            missing = sorted(set(needed) - set(other.provides))
            if missing:
                sentences.append(
                    f"{COMPONENT_TABLES[path]} '{_name(cls)}' [{'.'.join(path)}] needs a {kind} "
                    f"that provides {', '.join(repr(m) for m in missing)}, but {kind} "
                    f"'{_name(other)}' [{'.'.join(other_path)}] provides "
                    f"{', '.join(sorted(other.provides)) or 'nothing'}."
                )
    return sentences


def _name(cls: type) -> str:
    return cls.Config.model_fields["type"].default


def component_classes(recipe: Recipe) -> dict[tuple[str, ...], type]:
    """The plugin class behind each component table of a validated recipe."""
    classes = {}
    for path, kind in COMPONENT_TABLES.items():
        config = _lookup_model(recipe, path)
        classes[path] = registry(kind).get(config.type)
    return classes


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _lookup_model(recipe: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = recipe
    for part in path:
        value = getattr(value, part)
    return value


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _deep_copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_deep_copy(value) for value in data]
    return data


# -- writing -------------------------------------------------------------------------------
def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe, defaults included, as plain TOML-ready data (None omitted)."""
    return recipe.model_dump(mode="json", exclude_none=True)


def recipe_to_toml(recipe: Recipe) -> str:
    import tomli_w

    return tomli_w.dumps(recipe_to_dict(recipe))


def recipe_json_schema() -> dict[str, Any]:
    """A JSON Schema of recipes over every installed plugin (for editor completion).

    Imports every plugin; plugins that fail to load are left out.
    """
    from typing import Annotated, Union

    from pydantic import create_model

    def union(kind: str) -> Any:
        configs = []
        for name in registry(kind).names():
            try:
                configs.append(registry(kind).get(name).Config)
            except PluginError:
                continue
        if len(configs) <= 1:
            return configs[0] if configs else ComponentConfig
        return Annotated[Union[tuple(configs)], Field(discriminator="type")]  # noqa: UP007

    diffusion_fields = {
        path[1]: (union(kind), ...) for path, kind in COMPONENT_TABLES.items() if len(path) == 2
    }
    diffusion = create_model("Diffusion", __base__=StrictModel, **diffusion_fields)
    schema_model = create_model(
        "Recipe", __base__=StrictModel,
        data=(union("dataset"), ...), model=(union("model"), ...), diffusion=(diffusion, ...),
        train=(TrainConfig, TrainConfig()), sample=(SampleConfig, SampleConfig()),
        run=(RunConfig, RunConfig()),
    )
    return schema_model.model_json_schema()
