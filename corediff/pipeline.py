"""A built recipe: every component wired together, and generation from it.

    pipeline = corediff.load("runs/quickstart")              # weights included
    images = pipeline.sample(16, labels=3, seed=0)             # [16, C, H, W] in [-1, 1]
    degraded, direct, restored = pipeline.restore(images, t=500)

Generation: the prior draws x at its start step; the sampler walks it to step 0 through a
:class:`~corediff.denoiser.Denoiser` (the network, the parameterization, the recipe's guidance
and the labels). Class labels: ``None`` cycles through the classes (0, 1, ..., 0, 1, ...) for
class-conditional data, an int gives every sample that class, a LongTensor [n] gives each its
own; the null label ``num_classes`` asks for unconditional samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from corediff.denoiser import Denoiser
from corediff.errors import (
    ArgumentError,
    ArgumentTypeError,
    check_integer,
    did_you_mean,
)
from corediff.interfaces import (
    Dataset,
    DataSpec,
    Degradation,
    Guidance,
    LossWeighting,
    Model,
    Objective,
    Parameterization,
    Prior,
    Sampler,
    Schedule,
    TimeSampler,
    TrajectoryStep,
    steps_like,
)
from corediff.kinds import BY_NAME, DIFFUSION_KINDS, KINDS, Kind
from corediff.limits import MAX_BATCH, MAX_SAMPLES, MAX_SEED, MAX_STEPS
from corediff.recipe import (
    Recipe,
    _lookup,
    _lookup_model,
    parse_recipe,
    recipe_error,
    recipe_to_dict,
)


@dataclass
class Generated:
    """What :meth:`Pipeline.generate` returns: images on the CPU (float32, [-1, 1]), the first
    batch's trajectory when asked for, and the network evaluations per sample (``nfe``)."""

    images: Tensor
    trajectory: list[TrajectoryStep] = field(default_factory=list)
    nfe: int = 0


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TensorFloat-32 matmuls and convolutions on CUDA while inside (restored after); a CPU
    ignores the flags."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def sampling_network(network: nn.Module, precision: str = "fp32",
                     compile: bool = False) -> Callable[..., Tensor]:
    """``network`` as sampling calls it: compiled with ``torch.compile`` when asked, run
    under bf16 autocast for ``precision = "bf16"``, its output returned in float32 (the
    sampler's own arithmetic stays in float32/float64 whatever the network's precision)."""
    run = torch.compile(network) if compile else network
    autocast = precision == "bf16"

    def call(x: Tensor, *args: Any) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            return run(x, *args).float()

    return call


def model_inputs(spec: DataSpec, parameterization: Parameterization) -> dict[str, Any]:
    """What a model is built with: the data's shape and the parameterization's channels."""
    return {
        "in_channels": spec.channels,
        "out_channels": parameterization.output_channels(spec.channels),
        "image_size": spec.image_size,
        "num_classes": spec.num_classes,
    }


@dataclass
class Pipeline:
    """Every component a recipe names, built and wired together.

    Components may be swapped in Python (``pipeline.sampler = corediff.create(...)``):
    :attr:`recipe` is derived from the components as they are, so what is trained, saved
    and loaded is what was composed. ``Pipeline(recipe=...)`` takes the recipe it was built
    from (kept as :attr:`built_from`: its [train], [sample], [run] and [[log]] settings).
    """

    recipe: InitVar[Any]
    built_from: Any = field(init=False, repr=False)
    _derived: Any = field(default=None, init=False, repr=False, compare=False)
    data_spec: DataSpec
    dataset: Dataset | None
    schedule: Schedule
    degradation: Degradation
    parameterization: Parameterization
    loss_weighting: LossWeighting
    sampler: Sampler
    guidance: Guidance
    prior: Prior
    time_sampler: TimeSampler
    model: Model
    objective: Objective

    def __post_init__(self, recipe: Any) -> None:
        self.built_from = recipe

    def composed_recipe(self) -> Any:
        """The recipe of the pipeline as composed now (:attr:`recipe`)."""
        built_from = self.built_from
        if not isinstance(built_from, Recipe):  # a stand-in (tests): nothing to derive from
            return built_from
        problems = self._wiring_problems()
        if problems:
            raise recipe_error("the pipeline's components", problems)
        configs = [(kind.table, component.config) for kind, component in self._held()]
        if all(_lookup_model(built_from, table) == config for table, config in configs):
            return built_from
        if self._derived is None or self._derived[0] != configs:
            data = recipe_to_dict(built_from)
            for table, config in configs:
                _lookup(data, table[:-1])[table[-1]] = config.model_dump(
                    mode="json", exclude_none=True)
            self._derived = configs, parse_recipe(data, source="the pipeline's components")
        return self._derived[1]

    def replace(self, **components: Any) -> Pipeline:
        """A copy with ``components`` swapped in by kind (``sampler=corediff.create(...)``)
        and every component built on a swapped one rebuilt from its own config on the new
        one (fitted state is not carried over); the network keeps its weights."""
        from corediff.builder import instantiate

        unknown = sorted(set(components) - {kind.name for kind in KINDS if kind.in_pipeline})
        if unknown:
            raise ArgumentTypeError(f"replace: '{unknown[0]}' is not a component of a "
                                    f"pipeline.{did_you_mean(unknown[0], BY_NAME)}")
        new = dict(components)
        for kind, component in self._held():
            built_on = [dep for dep in kind.dependencies if dep in new]
            if kind.name not in new and kind.name != "model" and built_on:
                new[kind.name] = instantiate(kind.name, component.config, **{
                    dep: new.get(dep, getattr(self, dep)) for dep in kind.dependencies})
        return dataclasses.replace(self, recipe=self.built_from, **new)

    def _held(self) -> list[tuple[Kind, Any]]:
        """(kind, component) of every component held (the dataset when built with it)."""
        return [(kind, getattr(self, kind.name)) for kind in KINDS
                if kind.in_pipeline and getattr(self, kind.name, None) is not None]

    def _wiring_problems(self) -> list[str]:
        """A sentence per component built with other dependencies than the pipeline's own,
        with which the stored recipe would rebuild it differently from how it was trained."""
        problems = []
        for kind, component in self._held():
            name = f"pipeline.{kind.name} '{component.config.type}'"
            for dep in (d for d in kind.dependencies if d in BY_NAME):
                held = getattr(component, dep, None)  # None: the component keeps no reference
                if held is not None and not _same(held, getattr(self, dep, None)):
                    problems.append(f"{name} was built with a {dep} other than pipeline.{dep}, "
                                    f"which its run would be rebuilt with: create it with "
                                    f"{dep}=pipeline.{dep}, or swap components with "
                                    "pipeline.replace(...), which rebuilds those built on them")
        needed = model_inputs(self.data_spec, self.parameterization)
        wrong = [f"{key}={getattr(self.model, key, value)} (the pipeline's data and "
                 f"parameterization need {value})" for key, value in needed.items()
                 if getattr(self.model, key, value) != value]
        if wrong:
            problems.append(f"pipeline.model '{self.model.config.type}' was built with "
                            f"{', '.join(wrong)}")
        if self.dataset is not None and self.dataset.spec != self.data_spec:
            problems.append(f"pipeline.dataset '{self.dataset.config.type}' holds images of "
                            f"{self.dataset.spec}, not pipeline.data_spec {self.data_spec}")
        return problems

    def components(self) -> dict[str, Any]:
        """The non-network components by kind (those with fit/extra_state hooks)."""
        return {kind: getattr(self, kind) for kind in DIFFUSION_KINDS}

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    # -- generation ------------------------------------------------------------------------
    def labels(self, n: int, labels: int | Tensor | None = None) -> Tensor | None:
        """The n samples' class labels on the model's device (None: unconditional data)."""
        num_classes = self.data_spec.num_classes
        if isinstance(labels, Tensor):
            return self._label_tensor(labels, n).to(self.device, torch.long)
        if labels is not None and (isinstance(labels, bool) or not isinstance(labels, int)):
            raise ArgumentTypeError(f"labels must be None, an int or a LongTensor [n], not "
                                    f"{type(labels).__name__}")
        if labels is not None and not 0 <= labels < (num_classes or 0):
            classes = f"0..{num_classes - 1}" if num_classes else "none: the data has no classes"
            raise ArgumentError(f"[sample] label = {labels} is not a class of the data "
                                f"({classes})")
        if num_classes is None:
            return None
        if labels is not None:
            return torch.full((n,), labels, dtype=torch.long, device=self.device)
        return torch.arange(n, device=self.device) % num_classes

    def _label_tensor(self, labels: Tensor, n: int) -> Tensor:
        """``labels`` checked: an integer tensor [n] of classes or the null label."""
        num_classes = self.data_spec.num_classes
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ArgumentTypeError(f"labels must be an integer tensor, not {labels.dtype}")
        if tuple(labels.shape) != (n,):
            raise ArgumentError(f"labels must have shape [{n}] (one per image), not "
                                f"{list(labels.shape)}")
        if num_classes is None:
            raise ArgumentError("labels must be None: the data has no classes")
        if n and not bool(((labels >= 0) & (labels <= num_classes)).all()):
            raise ArgumentError(f"labels must be classes 0..{num_classes - 1} or the null label "
                                f"{num_classes}; got values {int(labels.min())}.."
                                f"{int(labels.max())}")
        return labels

    def denoiser(self, labels: Tensor | None, model: Any = None) -> Denoiser:
        """The sampler's view of ``model`` (default: the pipeline's) for these labels."""
        network = model if model is not None else self.model
        return Denoiser(
            network, self.parameterization, guidance=self.guidance, labels=labels,
            null_label=self.data_spec.num_classes, labelled=True,
        )

    def with_sampler(self, **changes: Any) -> Pipeline:
        """A copy whose sampler config has ``changes`` (e.g. ``steps=20``), validated."""
        config = self.sampler.config
        config = type(config).model_validate({**config.model_dump(), **changes})
        sampler = type(self.sampler)(
            config, degradation=self.degradation, parameterization=self.parameterization
        )
        return dataclasses.replace(self, recipe=self.built_from, sampler=sampler)

    def generate(self, n: int, **options: Any) -> Generated:
        """n samples from the prior through the sampler (see the module docstring), gathered
        on the CPU; options as :meth:`generate_batches`."""
        check_options(self.generate_batches, options)
        batches = list(self.generate_batches(n, **options))
        return Generated(torch.cat([batch.images for batch in batches]),
                         batches[0].trajectory, batches[0].nfe)

    @torch.no_grad()
    def generate_batches(
        self, n: int, *, labels: int | Tensor | None = None, seed: int = 0,
        generator: torch.Generator | None = None, batch_size: int | None = None,
        steps: int | None = None, trajectory: bool = False, model: nn.Module | None = None,
        callback: Callable[[int, int], None] | None = None, precision: str | None = None,
        compile: bool | None = None,
    ) -> Iterator[Generated]:
        """The n samples one batch at a time (device memory bounded by the batch; a caller
        that writes each batch out holds no more than one on the CPU either).

        ``generator`` (on the model's device) overrides ``seed``; ``batch_size``, ``precision``
        ("fp32", "tf32", "bf16") and ``compile`` default to the recipe's [sample] settings;
        ``steps`` overrides the sampler's step count; ``model`` replaces the pipeline's
        network (e.g. EMA weights); ``callback(i, n)`` is called after each sampling step of
        each batch (a progress bar). The first batch carries the trajectory when asked for.
        """
        check_integer("n", n, 1, MAX_SAMPLES)
        check_integer("seed", seed, 0, MAX_SEED)
        if batch_size is not None:
            check_integer("batch_size", batch_size, 1, MAX_BATCH)
        if precision not in (None, "fp32", "tf32", "bf16"):
            raise ArgumentError(f"precision must be 'fp32', 'tf32' or 'bf16', not {precision!r}")
        if steps is not None:
            check_integer("steps", steps, 1, MAX_STEPS)
            yield from self.with_sampler(steps=steps).generate_batches(
                n, labels=labels, seed=seed, generator=generator, batch_size=batch_size,
                trajectory=trajectory, model=model, callback=callback, precision=precision,
                compile=compile)
            return
        cfg = self.recipe.sample
        precision = cfg.precision if precision is None else precision
        network = model if model is not None else self.model
        device = next(network.parameters()).device
        fast = sampling_network(network, precision, cfg.compile if compile is None else compile)
        if generator is None:
            generator = torch.Generator(device).manual_seed(seed)
        all_labels = self.labels(n, labels)
        batch_size = batch_size or cfg.batch_size
        spec, start = self.data_spec, self.prior.start_step()
        for first in range(0, n, batch_size):
            size = min(batch_size, n - first)
            with tf32(precision == "tf32"):
                x = self.prior.sample(
                    (size, spec.channels, spec.image_size, spec.image_size),
                    generator=generator, device=device,
                )
                y = None if all_labels is None else all_labels[first:first + size]
                result = self.sampler.sample(
                    self.denoiser(y, fast), x, start=start, generator=generator,
                    trajectory=trajectory and first == 0, callback=callback,
                )
            yield Generated(result.sample.float().cpu(), result.trajectory, result.nfe)

    def sample(self, n: int, **options: Any) -> Tensor:
        """n images [n, C, H, W] in [-1, 1] on the CPU; options as :meth:`generate`."""
        check_options(self.generate_batches, options)
        return self.generate(n, **options).images

    def _check_images(self, images: object) -> None:
        """``images`` must be a float tensor [B, C, H, W] of the data's channels and size."""
        spec = self.data_spec
        expected = f"[B, {spec.channels}, {spec.image_size}, {spec.image_size}]"
        if not isinstance(images, Tensor) or not images.dtype.is_floating_point:
            what = images.dtype if isinstance(images, Tensor) else type(images).__name__
            raise ArgumentTypeError(f"images must be a float tensor {expected}, not {what}")
        if images.dim() != 4 or tuple(images.shape[1:]) != (
                spec.channels, spec.image_size, spec.image_size) or not len(images):
            raise ArgumentError(f"images must have shape {expected} with B >= 1 (the data's "
                                f"channels and size), not {list(images.shape)}")

    @torch.no_grad()
    def restore(
        self, images: Tensor, t: int | None = None, *, labels: Tensor | None = None,
        seed: int = 0, model: Any = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Conditional restoration (Cold Diffusion's setting): degrade real images
        [B, C, H, W] in [-1, 1] to step ``t`` (default: the prior's start step), then run the
        sampler back. Returns (degraded, direct x̂0, sample) on the model's device. Without
        ``labels`` the network is called unconditionally (the null label). ``model`` may be
        any callable ``model(x_t, t, y)`` (e.g. an oracle in tests)."""
        self._check_images(images)
        check_integer("seed", seed, 0, MAX_SEED)
        if labels is not None:
            labels = self._label_tensor(labels, len(images)) if isinstance(
                labels, Tensor) else self.labels(len(images), labels)
        start = self.prior.start_step() if t is None else t
        t_max = self.degradation.t_max
        if isinstance(start, bool) or not isinstance(start, int | float):
            raise ArgumentTypeError(f"restore: t must be a number, not {type(start).__name__}")
        if not 0 < start <= t_max:
            where = f"1..{t_max}" if isinstance(t_max, int) else f"(0, {t_max}]"
            raise ArgumentError(f"restore: t must be in {where} (got {start})")
        network = model if model is not None else self.model
        if isinstance(network, nn.Module):
            images = images.to(next(network.parameters()).device)
        x0 = images
        generator = torch.Generator(x0.device).manual_seed(seed)
        t_batch = steps_like(start, x0)
        noise = self.degradation.sample_noise(x0, generator=generator)
        degraded = self.degradation.degrade(x0, t_batch, noise)
        cfg = self.recipe.sample
        with tf32(cfg.precision == "tf32"):
            result = self.sampler.sample(
                self.denoiser(labels, sampling_network(network, cfg.precision, cfg.compile)),
                degraded, start=start, generator=generator,
            )
        return degraded, result.direct, result.sample


def check_options(method: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse a keyword ``method`` does not take, naming it and those it does."""
    import inspect

    allowed = [name for name, p in inspect.signature(method).parameters.items()
               if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ArgumentTypeError(f"unknown keyword argument '{unknown[0]}'."
                                f"{did_you_mean(unknown[0], allowed)} Allowed: "
                                f"{', '.join(allowed)}")


def _same(ours: Any, theirs: Any) -> bool:
    """Whether two components are one, or built alike (same class, config and dependencies,
    so rebuilding one from the recipe gives the other); networks only when they are one."""
    if ours is theirs:
        return True
    if isinstance(ours, nn.Module) or type(ours) is not type(theirs):
        return False
    if ours.config != theirs.config:
        return False
    kind = BY_NAME[ours.kind]
    return all(_same(getattr(ours, dep, None), getattr(theirs, dep, None))
               for dep in kind.dependencies if dep in BY_NAME)


Pipeline.recipe = property(  # type: ignore[assignment]
    Pipeline.composed_recipe,
    doc="""The recipe of the pipeline as composed now: :attr:`built_from` with each component's
    table replaced by that component's config, validated and checked as a recipe file is
    (the same sentences). ``corediff.train`` trains and saves it, so ``corediff.load`` gives
    back what was trained; a swap a recipe would refuse (a sampler that needs a Gaussian
    degradation on a blur), or a component built with other dependencies than the
    pipeline's, is a :class:`~corediff.errors.ConfigError` when training or sampling starts.""")
