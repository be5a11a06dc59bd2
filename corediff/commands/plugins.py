"""``corediff plugins list`` (reads install metadata only, imports no plugin),
``corediff plugins show NAME`` (imports that plugin: origin, summary, capabilities,
requirements, every config field) and ``corediff plugins check`` (imports every plugin and
reports failures)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from corediff.errors import PluginError, did_you_mean
from corediff.kinds import BY_NAME
from corediff.registry import REGISTRIES, check_plugins, list_plugins, registry


def listing(args: argparse.Namespace) -> int:
    for kind, infos in list_plugins(args.kind).items():
        print(f"{kind}:")
        for info in infos:
            print(f"  {info.name:<28} {info.origin:<24} {info.target}")
    return 0


def check(args: argparse.Namespace) -> int:
    failures = check_plugins()
    total = sum(len(reg.names()) for reg in REGISTRIES.values())
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"{total - len(failures)} of {total} plugins load")
    return 1 if failures else 0


def show(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(BY_NAME)
    matches = [kind for kind in kinds if args.name in registry(kind).names()]
    if not matches:
        every = sorted({n for kind in kinds for n in registry(kind).names()})
        where = f"{args.kind} " if args.kind else ""
        raise PluginError(f"no {where}plugin named '{args.name}'.{did_you_mean(args.name, every)}"
                          " See corediff plugins list.")
    for number, kind in enumerate(matches):
        if number:
            print()
        print(describe(kind, args.name))
    return 0


def describe(kind: str, name: str) -> str:
    """A plugin's card: origin, summary, capabilities, requirements and config fields."""
    from corediff.capabilities import vocabulary

    info = next(i for i in registry(kind).infos() if i.name == name)
    cls = registry(kind).get(name)
    known = vocabulary()
    lines = [f"{kind} '{name}' — {info.origin} ({info.target})"]
    lines += [f"  {line}" for line in _summary(cls)]
    from corediff.interfaces import Component

    depends = cls.capabilities.__func__ is not Component.capabilities.__func__
    note = " (depends on the config: see its capabilities())" if depends else ""
    lines.append("provides" + note + ":" + ("" if cls.provides else " nothing"))
    lines += [f"  {c}: {known[c].meaning}" for c in sorted(cls.provides)]
    lines.append("requires:" + ("" if cls.requires else " nothing"))
    lines += [f"  {k} providing {c}" for k, caps in cls.requires.items() for c in sorted(caps)]
    if kind == "sampler":
        lines.append(f"network evaluations per step: {cls.evaluations_per_step}")
    lines.append(f"config {BY_NAME[kind].where}:")
    for field, spec in cls.Config.model_fields.items():
        default = "required" if spec.is_required() else f"default {spec.default!r}"
        bounds = _bounds(spec.metadata)
        lines.append(f"  {field}: {_type_name(spec.annotation)}{bounds}, {default}")
        lines.append(f"      {spec.description or '(no description)'}")
    return "\n".join(lines)


def _summary(cls: type) -> list[str]:
    """The plugin module's docstring up to its first blank line (else the class's)."""
    import sys

    doc = sys.modules[cls.__module__].__doc__ or cls.__doc__ or ""
    return [line.strip() for line in doc.strip().split("\n\n")[0].splitlines()]


def _type_name(annotation: Any) -> str:
    """A readable type: ``int > 0 | None``, ``Literal['ddim']``, ``tuple[int, ...]``."""
    from types import UnionType
    from typing import Annotated, Literal, Union, get_args, get_origin

    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return f"{_type_name(args[0])}{_bounds(args[1:])}"
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is Ellipsis:
        return "..."
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _bounds(metadata: Any) -> str:
    """Pydantic's numeric constraints as text: `` > 0``, `` ≥ 0 < 1``."""
    symbols = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    flat = [inner for m in metadata for inner in getattr(m, "metadata", [m])]  # FieldInfo too
    found = [f"{symbols[key]} {getattr(m, key)}" for m in flat for key in symbols
             if type(m).__name__.lower() == key]
    return "".join(f" {text}" for text in found)
