"""Recipes: typed, validated TOML that names the components of a diffusion method.

A recipe names registered plugins only (a ``type`` per component table) — never an import
path — so a stranger's recipe cannot run arbitrary code. Loading resolves each ``type``
through its registry (importing only the plugins named), validates the table against that
plugin's Config, then checks that the components are compatible. Every problem is reported
at once, each naming the file, the table and key (``[diffusion.sampler] steps``) and why.
"""

from __future__ import annotations

import stat
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, create_model

from corediff.config import ComponentConfig, StrictModel
from corediff.errors import ConfigError, PluginError, did_you_mean
from corediff.kinds import BY_NAME, KINDS, Kind
from corediff.registry import registry
from corediff.sections import RunConfig, SampleConfig, TrainConfig

Component = SerializeAsAny[ComponentConfig]


def _component_field(kind: Kind) -> tuple[Any, Any]:
    if kind.many:  # None when absent, so recipes without it resolve (and hash) as before
        return (list[Component] | None, Field(
            None, description=f"{kind.description} (a list of registered {kind.name}s)"))
    return (Component, Field(description=f"{kind.description} (a registered {kind.name})"))


#: [diffusion]: the method — one table per swappable part (from the table of kinds).
DiffusionSection = create_model(
    "DiffusionSection", __base__=StrictModel,
    **{k.table[1]: _component_field(k) for k in KINDS if k.table[0] == "diffusion"},
)

#: A whole experiment: data, network, diffusion method, training, sampling, run.
Recipe = create_model(
    "Recipe", __base__=StrictModel,
    **{k.table[0]: _component_field(k) for k in KINDS if len(k.table) == 1},
    diffusion=(DiffusionSection, Field(description="The diffusion method.")),
    train=(TrainConfig, TrainConfig()),
    sample=(SampleConfig, SampleConfig()),
    run=(RunConfig, RunConfig()),
)

#: Where each component table lives in a recipe, and its kind.
COMPONENT_TABLES: dict[tuple[str, ...], str] = {kind.table: kind.name for kind in KINDS}


def kind_at(path: tuple[str | int, ...]) -> str:
    """The kind of the component at a recipe path: a table, or an item ``("log", 0)`` of a
    list of tables."""
    return COMPONENT_TABLES.get(path) or COMPONENT_TABLES[path[:-1]]  # type: ignore[index]


def _where(path: tuple[str | int, ...]) -> str:
    return f"[{'.'.join(map(str, path))}]"


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
    data = read_toml(Path(path), f"recipe file '{path}'")
    return parse_recipe(apply_overrides(data, overrides), source=str(path))


def read_toml(path: Path, name: str, missing: str = "not found") -> dict[str, Any]:
    """The TOML file at ``path`` as data — corediff's one reader of TOML files (recipes,
    stored recipes, studies) — or one :class:`ConfigError` beginning with ``name`` (how the
    file is named, e.g. ``recipe file 'r.toml'``): missing (``name`` + ``missing``), not a
    regular file (a FIFO is never opened: reading it would wait for a writer forever),
    unreadable, not UTF-8 text (binary), or refused by :func:`parse_toml`."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else (
                "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket")
            raise ConfigError(f"{name} is {kind}, not a regular file")
        raw = path.read_bytes()
    except FileNotFoundError:
        dangling = path.is_symlink()
        raise ConfigError(f"{name} is a symbolic link to nowhere" if dangling else
                          f"{name} {missing}") from None
    except OSError as exc:
        raise ConfigError(f"{name} cannot be read: {exc.strerror}") from None
    except ValueError:  # a NUL character in the path
        shown = name.replace("\0", "\\x00")
        raise ConfigError(f"{shown}: its path {NUL}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:  # undecodable, or binary that happens to decode
        raise ConfigError(f"{name} is not UTF-8 text")
    return parse_toml(text, str(path))


#: Deepest nesting of tables and arrays accepted in a TOML file.
MAX_NESTING = 64


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """TOML text as data, or one :class:`ConfigError` naming ``source``: a syntax error,
    nesting deeper than :data:`MAX_NESTING` (checked before anything recurses into the data;
    tomllib itself recurses), an integer of more digits than Python converts (4300), or a
    NUL character in a string (no path or name may hold one)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    except RecursionError:
        data = None
    except ValueError:  # int() of a literal beyond sys.get_int_max_str_digits()
        raise ConfigError(f"{source}: an integer has more than {sys.get_int_max_str_digits()} "
                          "digits; no setting takes one that large") from None
    deepest, nul = _walk(data)
    if data is None or deepest > MAX_NESTING:
        raise ConfigError(f"{source}: TOML syntax error: tables and arrays nested more than "
                          f"{MAX_NESTING} levels deep")
    if nul is not None:
        raise ConfigError(f"{source}: {Problem(nul, NUL)}")
    return data


NUL = "contains a NUL character (U+0000), which no name or path may hold"


def _walk(data: Any) -> tuple[int, tuple[str | int, ...] | None]:
    """The nesting depth of ``data`` (counted up to just past :data:`MAX_NESTING`, without
    recursion) and where its first string holding a NUL character is (None: nowhere)."""
    deepest, stack, nul = 0, [(data, 1, ())], None
    while stack and deepest <= MAX_NESTING:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, depth + 1, (*where, key)) for key, item in items)
        elif isinstance(value, str) and "\0" in value and nul is None:
            nul = where
    return deepest, nul


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
        except RecursionError:
            raise ConfigError(f"--set '{key}=...': the value is nested too deeply") from None
        except ValueError:  # an integer beyond sys.get_int_max_str_digits()
            raise ConfigError(f"--set '{key}=...': an integer has more than "
                              f"{sys.get_int_max_str_digits()} digits; no setting takes one "
                              "that large") from None
        if _walk(value)[1] is not None or "\0" in key:
            raise ConfigError(f"--set '{key}': {NUL}")
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
    deepest, nul = _walk(dict(data))
    if deepest > MAX_NESTING or nul is not None:
        raise recipe_error(source, [Problem(nul, NUL) if nul is not None else
                                    f"tables and arrays nested more than {MAX_NESTING} deep"])
    data = upgrade_recipe_data(_deep_copy(dict(data)))
    problems: list[Problem] = []
    classes: dict[tuple[str, ...], type] = {}
    configs: dict[tuple[str, ...], ComponentConfig] = {}
    for kind_row in KINDS:
        parent = _lookup(data, kind_row.table[:-1])
        if kind_row.default and isinstance(parent, dict):
            parent.setdefault(kind_row.table[-1], _deep_copy(
                [dict(t) for t in kind_row.default] if kind_row.many else dict(kind_row.default)))
    for kind_row in KINDS:
        table_path, kind = kind_row.table, kind_row.name
        parent = _lookup(data, table_path[:-1])
        value = parent.get(table_path[-1]) if isinstance(parent, dict) else None
        # (holder, key, path) of each component table: one, or each item of a list of tables
        if kind_row.many:
            items = [(value, i, (*table_path, i)) for i in range(len(value))] \
                if isinstance(value, list) else []
        else:
            items = [(parent, table_path[-1], table_path)] if isinstance(parent, dict) else []
        for holder, key, path in items:
            table = holder.get(key) if isinstance(holder, dict) else holder[key]
            if not isinstance(table, dict):
                continue  # missing or of the wrong type: the structural pass reports it
            resolved = _resolve_component(path, kind, table, problems)
            if resolved is None:  # reported; keep the structure valid so nothing else repeats
                holder[key] = ComponentConfig.model_construct(type=str(table.get("type")))
                continue
            holder[key], classes[path] = resolved
            configs[path] = holder[key]
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, Recipe, prefix=())
        recipe = None
    if problems:
        raise recipe_error(source, problems)
    incompatible = check_compatibility(classes, configs)
    incompatible = incompatible or check_components(classes, configs)
    incompatible += check_data_spec(classes, configs, recipe.sample)
    if incompatible:
        raise recipe_error(source, incompatible)
    return recipe  # type: ignore[return-value]


def check_components(
    classes: Mapping[tuple[str, ...], type], configs: Mapping[tuple[str, ...], ComponentConfig],
    partial: bool = False,
) -> list[str]:
    """Each component's own refusals of the others (``Component.check_recipe``). With
    ``partial`` (some components composed in Python, not a whole recipe), a check that looks
    up a kind not among them is left to the whole pipeline's check."""
    others = {kind_at(path): (cls, configs[path]) for path, cls in classes.items()}
    sentences = []
    for path, cls in classes.items():
        try:
            reasons = cls.check_recipe(configs[path], others)
        except (ValueError, TypeError) as exc:  # a companion refused its own settings
            reasons = [str(exc)]
        except KeyError:
            if not partial:
                raise
            reasons = []
        where = f"{kind_at(path)} '{_name(cls)}' {_where(path)}"
        sentences += [f"{where}: {why}" for why in reasons]
    return sentences


def upgrade_recipe_data(data: dict[str, Any]) -> dict[str, Any]:
    """Recipes written by corediff 0.1 (and their checkpoints) still load: ``[sample]
    guidance_scale = s`` becomes ``[diffusion.guidance] type = "cfg", scale = s``."""
    sample, diffusion = data.get("sample"), data.get("diffusion")
    if isinstance(sample, dict) and "guidance_scale" in sample and isinstance(diffusion, dict):
        scale = sample.pop("guidance_scale")
        diffusion.setdefault("guidance", {"type": "cfg", "scale": scale})
    return data


def check_data_spec(
    classes: Mapping[tuple[str, ...], type], configs: Mapping[tuple[str, ...], ComponentConfig],
    sample: Any = None,
) -> list[str]:
    """The model's refusals of the data (``Model.check_data_spec``) and a ``[sample] label``
    outside the classes, when the dataset can describe its images from its config alone."""
    data_path, model_path = BY_NAME["dataset"].table, BY_NAME["model"].table
    if data_path not in classes or model_path not in classes:
        return []
    spec = classes[data_path].describe(configs[data_path])
    if spec is None:
        return []
    model = classes[model_path]
    label, count = (sample.label if sample is not None else None), spec.num_classes
    wrong_label = ([f"[sample] label = {label} is not a class of [data] (0..{count - 1})"]
                   if label is not None and count is not None and label >= count else [])
    return wrong_label + [
        f"[{'.'.join(model_path)}] model '{_name(model)}' cannot take the data of "
        f"[{'.'.join(data_path)}] ({spec.channels}×{spec.image_size}×{spec.image_size}): {why}"
        for why in model.check_data_spec(configs[model_path], spec)
    ]


def _resolve_component(
    table_path: tuple[str | int, ...], kind: str, table: dict[str, Any], problems: list[Problem]
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
    if kind == "string_pattern_mismatch":
        owner = _model_at(model, loc[:-1])
        field = owner.model_fields.get(str(loc[-1])) if owner else None
        allowed = field.description if field is not None else err["msg"]
        return f"{err.get('input')!r} is not allowed. {allowed}"
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


def check_compatibility(
    classes: Mapping[tuple[str, ...], type],
    configs: Mapping[tuple[str, ...], ComponentConfig] | None = None,
) -> list[str]:
    """One sentence per unmet requirement between the recipe's components.

    What a component provides is ``cls.capabilities(config)`` when its config is given (a
    capability may depend on it), else the class's ``provides``.
    """
    configs = configs or {}
    by_kind = {kind_at(path): (path, cls) for path, cls in classes.items()}

    def provided(path: tuple[str, ...], cls: type) -> frozenset[str]:
        return cls.capabilities(configs[path]) if path in configs else cls.provides

    sentences = []
    for path, cls in classes.items():
        for kind, needed in getattr(cls, "requires", {}).items():
            if kind not in by_kind:
                continue
            other_path, other = by_kind[kind]
            offered = provided(other_path, other)
            missing = sorted(set(needed) - offered)
            if missing:
                sentences.append(
                    f"{kind_at(path)} '{_name(cls)}' {_where(path)} needs a {kind} "
                    f"that provides {', '.join(repr(m) for m in missing)}, but {kind} "
                    f"'{_name(other)}' {_where(other_path)} provides "
                    f"{', '.join(sorted(offered)) or 'nothing'}."
                )
    return sentences


def _name(cls: type) -> str:
    return cls.Config.model_fields["type"].default


def component_classes(recipe: Recipe) -> dict[tuple[str | int, ...], type]:
    """The plugin class behind each component table of a validated recipe (an item of a list
    of tables at ``(*table, index)``)."""
    classes: dict[tuple[str | int, ...], type] = {}
    for kind in KINDS:
        config = _lookup_model(recipe, kind.table)
        items = list(enumerate(config or ())) if kind.many else [(None, config)]
        for index, item in items:
            path = kind.table if index is None else (*kind.table, index)
            classes[path] = registry(kind.name).get(item.type)
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
    """The resolved recipe, defaults included, as plain TOML-ready data (None omitted; a
    ``quiet_default`` kind's table omitted while it is its default)."""
    data = recipe.model_dump(mode="json", exclude_none=True)
    for kind in KINDS:
        parent = _lookup(data, kind.table[:-1])
        if kind.quiet_default and parent.get(kind.table[-1]) == kind.default:
            del parent[kind.table[-1]]
    return data


def recipe_to_toml(recipe: Recipe) -> str:
    import tomli_w

    return tomli_w.dumps(recipe_to_dict(recipe))


def recipe_json_schema() -> dict[str, Any]:
    """A JSON Schema of recipes over every installed plugin (for editor completion).

    Imports every plugin; plugins that fail to load are left out.
    """
    from typing import Annotated, Union

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

    diffusion = create_model(
        "Diffusion", __base__=StrictModel,
        **{k.table[1]: (union(k.name), ...) for k in KINDS if k.table[0] == "diffusion"},
    )
    schema_model = create_model(
        "Recipe", __base__=StrictModel,
        **{k.table[0]: (list[union(k.name)], []) if k.many else (union(k.name), ...)
           for k in KINDS if len(k.table) == 1},
        diffusion=(diffusion, ...),
        train=(TrainConfig, TrainConfig()), sample=(SampleConfig, SampleConfig()),
        run=(RunConfig, RunConfig()),
    )
    return schema_model.model_json_schema()
