"""Turn a recipe into components — the same pieces a Python user composes by hand.

    schedule    = Schedule(config)
    degradation = Degradation(config, schedule=schedule)
    param       = Parameterization(config, degradation=degradation)
    weighting   = LossWeighting(config, degradation=degradation, parameterization=param)
    sampler     = Sampler(config, degradation=degradation, parameterization=param)
    prior       = Prior(config, degradation=degradation)
    model       = Model(config, in_channels=C, out_channels=param.output_channels(C), ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corediff.errors import ConfigError
from corediff.recipe import Problem, Recipe, _problems, recipe_error
from corediff.registry import registry

if TYPE_CHECKING:
    from corediff.interfaces import (
        Dataset,
        Degradation,
        LossWeighting,
        Model,
        Parameterization,
        Prior,
        Sampler,
        Schedule,
    )

#: Keyword arguments each kind's constructor takes besides its config.
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "schedule": (),
    "degradation": ("schedule",),
    "parameterization": ("degradation",),
    "loss_weighting": ("degradation", "parameterization"),
    "sampler": ("degradation", "parameterization"),
    "prior": ("degradation",),
    "model": ("in_channels", "out_channels", "image_size", "num_classes"),
    "dataset": (),
}


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of the data: channels, square size, class count."""

    channels: int
    image_size: int
    num_classes: int | None = None


@dataclass
class Pipeline:
    """Every component a recipe names, built and wired together."""

    recipe: Recipe
    data_spec: DataSpec
    dataset: Dataset | None
    schedule: Schedule
    degradation: Degradation
    parameterization: Parameterization
    loss_weighting: LossWeighting
    sampler: Sampler
    prior: Prior
    model: Model

    def components(self) -> dict[str, Any]:
        """The non-network components by kind (those with fit/extra_state hooks)."""
        return {
            "schedule": self.schedule, "degradation": self.degradation,
            "parameterization": self.parameterization, "loss_weighting": self.loss_weighting,
            "sampler": self.sampler, "prior": self.prior,
        }


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


def build(recipe: Recipe, *, data_spec: DataSpec | None = None) -> Pipeline:
    """Build every component of a recipe. With ``data_spec`` the dataset is not opened
    (sampling from a checkpoint needs the shapes, not the images)."""
    diffusion = recipe.diffusion
    dataset = None
    if data_spec is None:
        dataset = instantiate("dataset", recipe.data)
        data_spec = DataSpec(dataset.channels, dataset.image_size, dataset.num_classes)
    schedule = instantiate("schedule", diffusion.schedule)
    degradation = instantiate("degradation", diffusion.degradation, schedule=schedule)
    parameterization = instantiate(
        "parameterization", diffusion.parameterization, degradation=degradation
    )
    loss_weighting = instantiate(
        "loss_weighting", diffusion.loss_weighting,
        degradation=degradation, parameterization=parameterization,
    )
    sampler = instantiate(
        "sampler", diffusion.sampler, degradation=degradation, parameterization=parameterization
    )
    prior = instantiate("prior", diffusion.prior, degradation=degradation)
    model = instantiate(
        "model", recipe.model,
        in_channels=data_spec.channels,
        out_channels=parameterization.output_channels(data_spec.channels),
        image_size=data_spec.image_size,
        num_classes=data_spec.num_classes,
    )
    return Pipeline(
        recipe, data_spec, dataset, schedule, degradation, parameterization, loss_weighting,
        sampler, prior, model,
    )


def instantiate(kind: str, config: Any, **deps: Any) -> Any:
    """Build one component from its validated config (and its dependencies)."""
    cls = registry(kind).get(config.type)
    try:
        return cls(config, **deps)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a plugin refusing a combination of settings
        raise recipe_error(f"{kind} '{config.type}'", [Problem((), str(exc))]) from exc
