"""Plugin registries: one per component kind, found through Python entry points.

Discovery reads install metadata only (``importlib.metadata``); a plugin module is imported
the first time its plugin is used. First-party plugins are declared in corediff's own
pyproject.toml exactly as a third-party package declares its own:

    [project.entry-points."corediff.degradations"]
    my_blur = "my_package.my_blur:MyBlur"

The entry-point name is the plugin's name and its recipe ``type``. Errors are loud and
local: an unknown name lists what exists, a name offered by two distributions is refused
naming both, and a plugin that fails to import is reported where it is used, never at
start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, get_args, get_origin

from corediff.errors import PluginError, did_you_mean
from corediff.kinds import BY_NAME, KINDS

#: Component kind -> entry-point group (from the one table of kinds).
GROUPS: dict[str, str] = {kind.name: kind.group for kind in KINDS}


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from; known without importing it."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None = field(default=None, repr=False)
    cls: type | None = field(default=None, repr=False)  # set for in-process registrations

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}"


def natural_key(name: str) -> list[Any]:
    """Sort key that orders 'ddim10' before 'ddim100'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class Registry:
    """The plugins of one kind: discovered lazily, loaded on first use, checked on load."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = GROUPS[kind]
        self._discovered: dict[str, list[PluginInfo]] | None = None
        self._in_process: dict[str, PluginInfo] = {}
        self._loaded: dict[str, type] = {}

    # -- discovery (metadata only) -------------------------------------------------------
    def _scan(self) -> dict[str, list[PluginInfo]]:
        if self._discovered is None:
            found: dict[str, list[PluginInfo]] = {}
            seen: set[tuple[str, str, str]] = set()
            for ep in metadata.entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
                version = dist.version if dist is not None else "?"
                key = (ep.name, _normalise(dist_name), ep.value)
                if key in seen:  # the same distribution seen twice on sys.path
                    continue
                seen.add(key)
                info = PluginInfo(self.kind, ep.name, ep.value, dist_name, version, ep)
                found.setdefault(ep.name, []).append(info)
            self._discovered = found
        return self._discovered

    def refresh(self) -> None:
        """Forget what was discovered and loaded (after installing a package in-process)."""
        self._discovered = None
        self._loaded = {}

    def infos(self) -> list[PluginInfo]:
        """Every offer of a plugin of this kind, clashes included, in natural name order."""
        offers = [info for infos in self._scan().values() for info in infos]
        offers += self._in_process.values()
        return sorted(offers, key=lambda info: (natural_key(info.name), info.distribution))

    def names(self) -> list[str]:
        """Available plugin names, in natural order; imports nothing."""
        return sorted(set(self._scan()) | set(self._in_process), key=natural_key)

    # -- loading -----------------------------------------------------------------------
    def get(self, name: str) -> type:
        """The plugin class registered under ``name``, imported and checked on first use."""
        if name in self._loaded:
            return self._loaded[name]
        offers = list(self._scan().get(name, []))
        if name in self._in_process:
            offers.append(self._in_process[name])
        if not offers:
            available = ", ".join(self.names()) or "none installed"
            raise PluginError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, self.names())} "
                f"Available: {available}."
            )
        if len(offers) > 1:
            both = " and ".join(f"{o.origin} ({o.target})" for o in offers)
            raise PluginError(
                f"{self.kind} '{name}' is provided by more than one distribution: {both}. "
                "Uninstall one of them or rename its entry point."
            )
        info = offers[0]
        cls = info.cls if info.cls is not None else self._import(info)
        _check_plugin(info, cls)
        self._loaded[name] = cls
        return cls

    def _import(self, info: PluginInfo) -> type:
        try:
            return info.entry_point.load()  # type: ignore[union-attr]
        except Exception as exc:  # any import-time failure belongs to the plugin
            raise PluginError(
                f"{self.kind} '{info.name}' from {info.origin} failed to load "
                f"(target '{info.target}'): {type(exc).__name__}: {exc}"
            ) from exc

    # -- in-process registration ---------------------------------------------------------
    def register(self, name: str | None = None) -> Callable[[type], type]:
        """Class decorator registering a plugin in this process (notebooks, tests)."""

        def decorator(cls: type) -> type:
            plugin_name = name or _config_type(cls)
            if plugin_name in self._scan() or plugin_name in self._in_process:
                raise PluginError(
                    f"{self.kind} '{plugin_name}' is already registered; pick another name."
                )
            info = PluginInfo(
                self.kind, plugin_name, f"{cls.__module__}:{cls.__qualname__}",
                "<in-process>", "-", None, cls,
            )
            _check_plugin(info, cls)
            self._in_process[plugin_name] = info
            return cls

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an in-process registration."""
        self._in_process.pop(name, None)
        self._loaded.pop(name, None)


def _normalise(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def _config_type(cls: type) -> str:
    """The ``type`` literal of a plugin's Config class."""
    config = getattr(cls, "Config", None)
    fields = getattr(config, "model_fields", {})
    annotation = fields["type"].annotation if "type" in fields else None
    if get_origin(annotation) is not Literal or len(get_args(annotation)) != 1:
        return ""
    return get_args(annotation)[0]


def _check_plugin(info: PluginInfo, cls: Any) -> None:
    """A plugin must subclass its kind's interface, carry a Config typed with its name and
    declare its capabilities from the vocabulary (:mod:`corediff.capabilities`), providing
    only its own kind's. A declaration so malformed that checking it fails is reported as
    this plugin's PluginError, like any other refusal."""
    where = f"{info.kind} '{info.name}' from {info.origin} (target '{info.target}')"
    try:
        _check_declarations(info, cls, where)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a broken plugin raises is its own
        raise PluginError(f"{where} cannot be checked: {type(exc).__name__}: {exc}") from exc


def _check_declarations(info: PluginInfo, cls: Any, where: str) -> None:
    from corediff.capabilities import validate_declaration
    from corediff.config import ComponentConfig

    base = BY_NAME[info.kind].base_class()
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{where} is not a subclass of corediff.interfaces.{base.__name__}.")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        raise PluginError(f"{where} has no Config class derived from ComponentConfig.")
    declared = _config_type(cls)
    if declared != info.name:
        raise PluginError(
            f"{where}: its Config declares type Literal['{declared}'], "
            f"expected Literal['{info.name}'] (the entry-point name)."
        )
    validate_declaration(cls, where, info.kind)


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in GROUPS}


def registry(kind: str) -> Registry:
    """The registry of one kind ('degradation', 'sampler', ...)."""
    if kind not in REGISTRIES:
        raise PluginError(
            f"unknown component kind '{kind}'.{did_you_mean(kind, REGISTRIES)} "
            f"Kinds: {', '.join(REGISTRIES)}."
        )
    return REGISTRIES[kind]


def register(kind: str, name: str | None = None) -> Callable[[type], type]:
    """Decorator: ``@corediff.register("degradation")`` registers a class in-process."""
    return registry(kind).register(name)


def list_plugins(kind: str | None = None) -> dict[str, list[PluginInfo]]:
    """Installed plugins by kind (metadata only: nothing is imported)."""
    kinds = [kind] if kind is not None else list(REGISTRIES)
    return {k: registry(k).infos() for k in kinds}


def check_plugins() -> list[PluginError]:
    """Load every plugin of every kind; return the failures (empty when all load)."""
    failures: list[PluginError] = []
    for reg in REGISTRIES.values():
        for name in reg.names():
            try:
                reg.get(name)
            except PluginError as exc:
                failures.append(exc)
    return failures


def refresh() -> None:
    """Rescan entry points of every kind."""
    for reg in REGISTRIES.values():
        reg.refresh()
