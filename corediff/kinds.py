"""The component kinds, written once.

Every place that needs to know the kinds — the registries (entry-point groups), the recipe
(its tables), the builder (constructor dependencies and build order), ``Pipeline``, the JSON
Schema and the conformance suite — derives from :data:`KINDS`. Adding a kind is one row here
plus its base class in :mod:`corediff.interfaces`.

This module imports nothing heavy (no torch, no pydantic): ``corediff plugins list`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One component kind.

    Attributes:
        name: the kind's name ("sampler"), used by ``corediff.create`` and ``--kind``.
        base: its base class's name in :mod:`corediff.interfaces`.
        group: the entry-point group third-party packages register under.
        table: where its config lives in a recipe, e.g. ``("diffusion", "sampler")``.
        dependencies: keyword arguments its constructor takes besides the config: other
            kinds (built earlier in :data:`KINDS` order) or data-spec values.
        description: one line, shown in the recipe's JSON Schema and ``corediff --help``.
        default: the table used when a recipe omits it (None: the table is required); for
            a kind with ``many``, the list of tables (empty: none).
        many: the recipe holds a list of tables (``[[log]]``), each one component.
        in_pipeline: built by :func:`corediff.builder.build` into a ``Pipeline``; False for
            the kinds the engine opens itself when it runs (loggers, with the run directory).
        quiet_default: the resolved recipe leaves the table out while it equals ``default``
            (its absence reads as the default), so recipes written before the kind existed
            resolve, and hash into study fingerprints, as before.
    """

    name: str
    base: str
    group: str
    table: tuple[str, ...]
    dependencies: tuple[str, ...]
    description: str
    default: dict[str, Any] | tuple[dict[str, Any], ...] | None = None
    many: bool = False
    in_pipeline: bool = True
    quiet_default: bool = False

    def base_class(self) -> type:
        """The interface every plugin of this kind subclasses (imports torch)."""
        return getattr(import_module("corediff.interfaces"), self.base)

    @property
    def where(self) -> str:
        """The recipe table, as written in TOML: ``[diffusion.sampler]`` (``[[log]]``)."""
        name = ".".join(self.table)
        return f"[[{name}]]" if self.many else f"[{name}]"


#: Every kind, in build order (a kind's dependencies come before it).
KINDS: tuple[Kind, ...] = (
    Kind("dataset", "Dataset", "corediff.datasets", ("data",), (),
         "The training dataset."),
    Kind("schedule", "Schedule", "corediff.schedules", ("diffusion", "schedule"), (),
         "Maps step t to ᾱ_t, a blur width or a rank."),
    Kind("degradation", "Degradation", "corediff.degradations", ("diffusion", "degradation"),
         ("schedule",), "The forward process D(x0, t)."),
    Kind("parameterization", "Parameterization", "corediff.parameterizations",
         ("diffusion", "parameterization"), ("degradation",), "What the network predicts."),
    Kind("loss_weighting", "LossWeighting", "corediff.loss_weightings",
         ("diffusion", "loss_weighting"), ("degradation", "parameterization"),
         "Per-step weight of the training loss."),
    Kind("sampler", "Sampler", "corediff.samplers", ("diffusion", "sampler"),
         ("degradation", "parameterization"), "The reverse process used to generate."),
    Kind("guidance", "Guidance", "corediff.guidances", ("diffusion", "guidance"),
         ("degradation", "parameterization"),
         "How conditional and unconditional predictions combine while sampling.",
         default={"type": "none"}),
    Kind("prior", "Prior", "corediff.priors", ("diffusion", "prior"), ("degradation",),
         "Where generation starts (x at the prior's start step)."),
    Kind("time_sampler", "TimeSampler", "corediff.time_samplers",
         ("diffusion", "time_sampler"), ("degradation",),
         "The distribution of training times t.", default={"type": "uniform"}),
    Kind("model", "Model", "corediff.models", ("model",),
         ("in_channels", "out_channels", "image_size", "num_classes"),
         "The denoising network."),
    Kind("objective", "Objective", "corediff.objectives", ("diffusion", "objective"),
         ("degradation", "parameterization", "loss_weighting", "time_sampler", "model"),
         "The training loss of a batch (denoising, distillation, consistency, ...).",
         default={"type": "denoising"}, quiet_default=True),
    Kind("logger", "Logger", "corediff.loggers", ("log",), ("run_dir",),
         "An experiment tracker the trainer also reports to (metrics.csv is always written).",
         default=(), many=True, in_pipeline=False),
)

#: Kind name -> Kind.
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}

#: Recipe table -> Kind.
BY_TABLE: dict[tuple[str, ...], Kind] = {kind.table: kind for kind in KINDS}

#: The kinds built from other components (not the data or the network): those with
#: ``fit``/``extra_state`` hooks that a checkpoint carries.
DIFFUSION_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.table[0] == "diffusion")
