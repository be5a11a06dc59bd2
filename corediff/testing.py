"""Conformance checks every plugin passes — importable, so a third-party package runs the same
suite in its own CI as corediff runs over its first-party plugins.

    # tests/test_conformance.py of your package
    import pytest
    from corediff.testing import conformance_cases

    @pytest.mark.parametrize("case", conformance_cases(names={"my_sampler"}), ids=str)
    def test_conformance(case):
        case.run()

or, for one plugin, ``corediff.testing.check_plugin("sampler", "my_sampler")``.

Companions are chosen by capability: for each degradation the plugin is compatible with, the
first chain of the other diffusion kinds that passes the recipe's compatibility check is
built (small T, 8×8 images). Each plugin is checked with its default config and with each
config :func:`variants` draws from its schema (one field changed at a time) that the recipe
checks accept in the chain. A plugin that cannot be loaded fails its own case with the
reason and is left out of every other plugin's companions. Failures print the values.
What is checked, per kind:

* schedule: ``values()`` float64 [T + 1], finite, repeatable, monotone;
* degradation: shape/dtype/device kept, ``D(x0, 0) = x0``, deterministic given the noise,
  seeded noise repeatable, ``degrade_many`` equal to ``degrade``; on steps that may be
  fractional (``continuous``), t + ½ degrades differently from t and t + 1;
* parameterization: finite x̂0, target and per-sample loss of the right shapes,
  ``predict(target(x0)).x0 = x0``;
* loss weighting: finite non-negative weights [B], repeatable;
* sampler: descending steps from T, seeded runs repeatable, the trajectory visits
  ``timesteps()``, ``nfe`` equals ``nfe()`` and the network calls made; a deterministic
  sampler driven by the true-x0 oracle (the network output whose prediction is x0) returns
  the data (:func:`check_sampler_oracle`); on Gaussian data through a Gaussian-family
  degradation, with the exact denoiser (:mod:`corediff.testing_gaussian`), a deterministic
  sampler declaring ``order`` follows the closed-form probability-flow ODE path at every
  visited state and converges at that order over N = 10, 20, 40, and a stochastic one
  gives samples of the data's mean and variance (:func:`check_sampler_exact`);
* guidance: the combination of two equal outputs is the unguided prediction; unequal ones
  satisfy the invariants the guidance declares (``invariants``, see GUIDANCE_INVARIANTS:
  scale 1 is the conditional prediction, ...);
* prior: seeded samples repeatable, start time in (0, t_max]; one declaring
  ``marginal = True`` draws with the moments of the data degraded to its start time;
* time sampler: times in (0, t_max] of the degradation's kind (on 8192 draws), repeatable,
  positive importance weights that keep the uniform-time objective unbiased, its state
  round-trips;
* model: output shape, repeatable, at integer, fractional and boundary t (float32 and
  float64), with labels, the null label ``num_classes`` and ``y=None`` (the null label), and
  built unconditional; labels and fractional t change the output;
* objective: finite per-sample losses [B] and logs, gradients reaching the trained network
  only (not the teacher, not the objective's own modules), and state that round-trips
  through a checkpoint file into an objective giving the same losses
  (:func:`check_objective`);
* dataset: images [C, S, S] float32 in [-1, 1], int labels, ``describe`` agrees;
* logger: refused with the pip command when its packages are missing, else two sessions
  (scalars, an image) of which the second continues the first's tracker run;
* every config: JSON round trip, frozen.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import tempfile
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from corediff import testing_gaussian as exact
from corediff.config import ComponentConfig
from corediff.errors import CorediffError
from corediff.interfaces import DataSpec, steps_like
from corediff.kinds import BY_NAME, DIFFUSION_KINDS, KINDS
from corediff.recipe import check_compatibility, check_components
from corediff.registry import registry

STEPS = 25
IMAGES = 4
#: Devices checked: the CPU, and CUDA when present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

Chain = dict[str, type]


def images(device: str = "cpu", channels: int = 3, size: int = 8,
           dtype: torch.dtype = torch.float32) -> Tensor:
    """Fixed random images [IMAGES, channels, size, size] in [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(IMAGES, channels, size, size, generator=generator, dtype=dtype) * 2 - 1
    return x.to(device)


def times(degradation: Any, device: str = "cpu", *, clean: bool = True) -> Tensor:
    """Four times as ``degradation`` takes them (see :mod:`corediff.interfaces`): 0 (or with
    ``clean=False`` the first step), the first step, the middle and ``t_max`` — steps for a
    discrete degradation, floats (1 % of t_max for "the first step") for a continuous one."""
    t_max = degradation.t_max
    if isinstance(t_max, int):
        return torch.tensor([0 if clean else 1, 1, t_max // 2, t_max], device=device)
    first = 0.01 * t_max
    return torch.tensor([0.0 if clean else first, first, 0.5 * t_max, float(t_max)],
                        dtype=torch.float64, device=device)


def earlier(t: Tensor) -> Tensor:
    """A time before each of t (one step earlier, or half the time), never below 0."""
    return t.clamp(min=1) - 1 if not t.is_floating_point() else t * 0.5


def make_config(cls: type, **fields: Any) -> ComponentConfig:
    """A plugin's default config (schedules get T = STEPS; an objective that needs a teacher
    names one, which the checks build rather than load)."""
    if cls.kind == "schedule" and "steps" in cls.Config.model_fields:
        fields.setdefault("steps", STEPS)
    if cls.kind == "objective" and cls.needs_teacher:
        fields.setdefault("teacher", "conformance-teacher")
    return cls.Config(**fields)


def loadable(kind: str) -> tuple[list[type], dict[str, str]]:
    """The classes of kind's registered plugins that load, and for each one that does not,
    why: one broken plugin is reported, not fatal to the other plugins' checks."""
    classes, broken = [], {}
    for name in registry(kind).names():
        try:
            classes.append(registry(kind).get(name))
        except Exception as error:  # noqa: BLE001 - any import-time failure is reported
            broken[name] = f"{kind} '{name}' cannot be loaded: {type(error).__name__}: {error}"
    return classes, broken


def chains(kind: str, name: str) -> list[Chain]:
    """For each degradation compatible with plugin (kind, name): the first chain of diffusion
    component classes (one per diffusion kind) that passes the compatibility check; plugins
    that cannot be loaded are left out of the companions."""
    target = registry(kind).get(name)
    options = {k: [target] if k == kind else [c for c in loadable(k)[0] if _pair_ok(target, c)]
               for k in DIFFUSION_KINDS}
    found: dict[type, Chain] = {}
    defaults = {c: make_config(c) for cs in options.values() for c in cs}

    def extend(chain: Chain) -> None:
        """Depth first in the kinds' order, pruning a partial chain as soon as two of its
        components are incompatible (requirements are between pairs): the same first chain
        per degradation as trying every combination in order, without trying them all."""
        tables = {BY_NAME[k].table: c for k, c in chain.items()}
        if check_compatibility(tables):
            return
        configs = {t: defaults[c] for t, c in tables.items()}
        if len(chain) == len(DIFFUSION_KINDS):
            if not check_components(tables, configs):
                found.setdefault(chain["degradation"], dict(chain))
            return

        next_kind = DIFFUSION_KINDS[len(chain)]
        for option in options[next_kind]:
            if "degradation" in chain and chain["degradation"] in found:
                return
            extend({**chain, next_kind: option})

    extend({})
    return list(found.values())


def _pair_ok(first: type, second: type) -> bool:
    """Whether two plugins (default configs) can share a chain as far as they alone decide:
    their requirements and their refusals of each other (filtering companions with it first
    spares the search every chain of a pair that fails)."""
    tables = {BY_NAME[c.kind].table: c for c in (first, second)}
    configs = {t: make_config(c) for t, c in tables.items()}
    try:
        return not check_compatibility(tables) and not check_components(
            tables, configs, partial=True)
    except Exception:  # noqa: BLE001 - a check that needs a third kind: left to the chain
        return True


Configs = Mapping[str, ComponentConfig]


def build_chain(classes: Chain, device: str = "cpu", model: Any = None,
                configs: Configs | None = None) -> dict[str, Any]:
    """Build a chain with default configs, or those ``configs`` names per kind (in the kinds
    table's order), and fit it on images; the objective only when ``model`` (the network it
    trains) is given."""
    built: dict[str, Any] = {} if model is None else {"model": model}
    for kind in KINDS:
        if kind.name in classes and all(dep in built for dep in kind.dependencies):
            cls = classes[kind.name]
            deps = {dep: built[dep] for dep in kind.dependencies}
            built[kind.name] = cls((configs or {}).get(kind.name) or make_config(cls), **deps)
    for kind, component in built.items():
        if kind != "model":
            component.fit(images(device).cpu())
    return built


def assert_round_trip(config: ComponentConfig) -> None:
    """A config survives dump/validate and JSON, and is frozen."""
    cls = type(config)
    for how, again in (("dump/validate", cls.model_validate(config.model_dump())),
                       ("JSON", cls.model_validate_json(config.model_dump_json()))):
        assert again == config, f"{config!r} comes back from {how} as {again!r}"
    try:
        config.type = "changed"  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - pydantic raises its own frozen error
        return
    raise AssertionError(f"config {cls.__name__} is not frozen")


def _close(actual: Tensor, expected: Tensor, atol: float, what: str, rtol: float = 0) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


# -- per kind ------------------------------------------------------------------------------
def check_schedule(classes: Chain, device: str = "cpu", configs: Configs | None = None
                   ) -> None:
    """values() float64 [T + 1], finite, repeatable and monotone (ᾱ falls, a blur width or
    a removed rank grows: whichever way, one way)."""
    schedule = build_chain(classes, configs=configs)["schedule"]
    values = schedule.values()
    what = f"{schedule.config!r}: values()"
    assert values.dtype == torch.float64 and values.shape == (schedule.steps + 1,), (
        f"{what} is {values.dtype} {tuple(values.shape)}, not float64 ({schedule.steps + 1},)")
    assert torch.isfinite(values).all(), f"{what} has non-finite entries: {values.tolist()}"
    assert torch.equal(values, schedule.values()), f"{what} differs between two calls"
    steps = values.diff()
    assert bool((steps >= 0).all() or (steps <= 0).all()), (
        f"{schedule.config!r}: values() is not monotone: it rises at steps "
        f"{(steps > 0).nonzero().flatten().add(1).tolist()[:8]} and falls at "
        f"{(steps < 0).nonzero().flatten().add(1).tolist()[:8]} (values {values.tolist()[:8]}...)")
    assert_round_trip(schedule.config)


def check_degradation(classes: Chain, device: str = "cpu", configs: Configs | None = None
                      ) -> None:
    degradation = build_chain(classes, device, configs=configs)["degradation"]
    x0 = images(device)
    t = times(degradation, device)
    noise = degradation.sample_noise(x0, torch.Generator(device).manual_seed(1))
    out = degradation.degrade(x0, t, noise)
    assert (out.shape, out.dtype, out.device) == (x0.shape, x0.dtype, x0.device), (
        f"{degradation.config!r}: D(x0, t) is {tuple(out.shape)} {out.dtype} on {out.device}"
        f" for x0 {tuple(x0.shape)} {x0.dtype} on {x0.device}")
    _close(out[0], x0[0], 1e-5, "D(x0, 0) = x0")
    assert torch.equal(out, degradation.degrade(x0, t, noise)), "deterministic given noise"
    again = degradation.sample_noise(x0, torch.Generator(device).manual_seed(1))
    assert (noise is None) == (again is None) and (noise is None or torch.equal(noise, again)), (
        f"{degradation.config!r}: sample_noise under the same seed differs")
    assert (noise is None) == ("deterministic" in degradation.provides), (
        f"{degradation.config!r}: sample_noise gives {'None' if noise is None else 'noise'} "
        f"but the degradation provides {sorted(degradation.provides)}")
    many = degradation.degrade_many(x0, [t, earlier(t)], noise)
    _close(many[0], out, 1e-5, "degrade_many[0]")
    _close(many[1], degradation.degrade(x0, earlier(t), noise), 1e-5, "degrade_many[1]")
    if "continuous" in degradation.provides and isinstance(degradation.t_max, int):
        _check_between_steps(degradation, x0, noise)
    assert_round_trip(degradation.config)


def _check_between_steps(degradation: Any, x0: Tensor, noise: Tensor | None) -> None:
    """A degradation on steps that also takes fractional ones (``continuous``) degrades at
    t + ½ differently from t and from t + 1."""
    low = torch.tensor([1, 2, degradation.t_max // 2, degradation.t_max - 1], device=x0.device)
    half = degradation.degrade(x0, low.double() + 0.5, noise)
    for step in (low, low + 1):
        same = (half - degradation.degrade(x0, step, noise)).flatten(1).abs().amax(1) < 1e-7
        assert not same.any(), (
            f"{degradation.config!r}: D(x0, t + 0.5) equals D(x0, {step.tolist()}) at "
            f"t + 0.5 = {(low.double() + 0.5)[same].tolist()}: fractional steps are ignored")


def check_parameterization(classes: Chain, device: str = "cpu", configs: Configs | None = None
                           ) -> None:
    built = build_chain(classes, device, configs=configs)
    param, degradation = built["parameterization"], built["degradation"]
    x0 = images(device)
    t = times(degradation, device, clean=False)
    noise = degradation.sample_noise(x0, torch.Generator(device).manual_seed(2))
    _check_inverse(param, degradation, x0.double(), t, noise)
    x_t = degradation.degrade(x0, t, noise)
    output = torch.randn(IMAGES, param.output_channels(3), 8, 8,
                         generator=torch.Generator().manual_seed(3)).to(device)
    prediction = param.predict(output, x_t, t)
    what = f"{param.config!r} at t = {t.tolist()}"
    assert prediction.x0.shape == x0.shape and torch.isfinite(prediction.x0).all(), (
        f"{what}: x̂0 {tuple(prediction.x0.shape)} for {tuple(x0.shape)}, finite "
        f"{bool(torch.isfinite(prediction.x0).all())}")
    target_shape = param.target(x0, x_t, t, noise).shape
    assert target_shape == x0.shape, f"{what}: target {tuple(target_shape)}"
    per_sample = param.loss(output, x0, x_t, t, noise, lambda a, b: (a - b).square())
    assert per_sample.shape == (IMAGES,) and torch.isfinite(per_sample).all(), (
        f"{what}: per-sample loss {per_sample.tolist()}")
    scale = param.x0_loss_scale(t)
    assert scale.shape == (IMAGES,), f"{what}: x0_loss_scale {tuple(scale.shape)}"
    x_in, t_in = param.condition(x_t, t)
    assert x_in.shape == x_t.shape and t_in.shape == (IMAGES,) and torch.isfinite(t_in).all(), (
        f"{what}: condition gives {tuple(x_in.shape)} and t {t_in.tolist()}")
    assert_round_trip(param.config)


def _check_inverse(param: Any, degradation: Any, x0: Tensor, t: Tensor, noise: Tensor | None
                   ) -> None:
    """predict(target(x0, x_t, t, ε)).x0 = x0 (float64; learned-variance channels zero)."""
    noise = None if noise is None else noise.double()
    x_t = degradation.degrade(x0, t, noise)
    target = param.target(x0, x_t, t, noise)
    extra = param.output_channels(3) - 3
    output = torch.cat([target, target.new_zeros(len(x0), extra, *x0.shape[2:])], 1)
    _close(param.predict(output, x_t, t).x0, x0, 1e-6,
           f"predict(target(x0)).x0 = x0 at t = {t.tolist()} ({param.config!r})", 1e-6)


def check_loss_weighting(classes: Chain, device: str = "cpu", configs: Configs | None = None
                         ) -> None:
    built = build_chain(classes, device, configs=configs)
    weighting, t_max = built["loss_weighting"], built["degradation"].t_max
    t = (torch.arange(1, STEPS + 1, device=device) if isinstance(t_max, int) else
         torch.linspace(0.01, 1, STEPS, dtype=torch.float64, device=device) * t_max)
    weight = weighting.weight(t)
    what = f"{weighting.config!r}: weight(t)"
    assert weight.shape == t.shape and weight.is_floating_point(), (
        f"{what} is {weight.dtype} {tuple(weight.shape)} for t {tuple(t.shape)}")
    assert torch.isfinite(weight).all() and (weight >= 0).all(), f"{what} = {weight.tolist()}"
    assert torch.equal(weight, weighting.weight(t)), f"{what} differs between two calls"
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    shape = weighting.per_element(a, b).shape
    assert shape == a.shape, f"{weighting.config!r}: per_element {tuple(shape)}"
    assert_round_trip(weighting.config)


def oracle(built: dict[str, Any], x0: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """The network output whose prediction is the true x0 at any (x_t, t): the
    parameterization's target for x0 and the noise that maps x0 to x_t (zeros for the
    learned-variance channels)."""
    param, degradation = built["parameterization"], built["degradation"]

    def network(x_t: Tensor, t: Tensor) -> Tensor:
        noise = degradation.estimate_noise(x_t, x0, t)
        target = param.target(x0, x_t, t, noise)
        extra = param.output_channels(x0.shape[1]) - x0.shape[1]
        return torch.cat([target, target.new_zeros(x0.shape[0], extra, *x0.shape[2:])], 1)

    return network


def check_sampler(classes: Chain, device: str = "cpu", configs: Configs | None = None) -> None:
    built = build_chain(classes, device, configs=configs)
    sampler, param, t_max = built["sampler"], built["parameterization"], built[
        "degradation"].t_max
    x_T = images(device)
    calls = []

    def model(x: Tensor, t: Tensor) -> Tensor:
        assert t.shape == (x.shape[0],) and torch.isfinite(t).all(), (
            f"{sampler.config!r} called the network with t = {t.tolist()}")
        calls.append(1)
        return (torch.tanh(x) * 0.5).repeat(1, param.output_channels(3) // 3, 1, 1)

    steps = sampler.timesteps()
    assert steps == sorted(steps, reverse=True) and steps[0] == t_max and steps[-1] > 0, (
        f"{sampler.config!r}: timesteps() must descend from t_max = {t_max} to a time > 0; "
        f"got {steps[:3]} ... {steps[-3:]}")
    runs = [sampler.sample(model, x_T, generator=torch.Generator(device).manual_seed(4),
                           trajectory=True) for _ in range(2)]
    result = runs[0]
    got = (result.sample.shape, result.sample.dtype, result.sample.device, result.direct.shape)
    assert got == (x_T.shape, x_T.dtype, x_T.device, x_T.shape), (
        f"{sampler.config!r}: sample {got[:3]}, direct {tuple(got[3])} for x_T "
        f"{(x_T.shape, x_T.dtype, x_T.device)}")
    assert torch.isfinite(result.sample).all(), f"{sampler.config!r}: non-finite samples"
    assert torch.equal(result.sample, runs[1].sample), "seeded runs must repeat"
    visited = [step.t for step in result.trajectory]
    assert visited == steps, f"{sampler.config!r}: trajectory at {visited}, timesteps() {steps}"
    assert result.nfe == sampler.nfe() == len(calls) // 2, (
        f"nfe: result {result.nfe}, nfe() {sampler.nfe()}, network calls {len(calls) // 2}")
    check_sampler_oracle(classes, device, configs)
    check_sampler_exact(classes, device, configs)
    assert_round_trip(sampler.config)


def check_sampler_oracle(classes: Chain, device: str = "cpu", configs: Configs | None = None
                         ) -> None:
    """A deterministic sampler (same result under two different seeds) driven by the true-x0
    oracle from x_T = D(x0, T) returns x0 (float64, to 1e-6)."""
    built = build_chain(classes, device, configs=configs)
    sampler, degradation = built["sampler"], built["degradation"]
    x0 = images(device, dtype=torch.float64)
    t = times(degradation, device)[-1].repeat(IMAGES)
    x_T = degradation.degrade(x0, t, degradation.sample_noise(
        x0, torch.Generator(device).manual_seed(5)))
    network = exact.RawDenoiser(oracle(built, x0), built["parameterization"])
    first, second = (sampler.sample(network, x_T, generator=torch.Generator(device).manual_seed(s))
                     for s in (6, 7))
    if torch.equal(first.sample, second.sample):
        _close(first.sample, x0, 1e-6, "deterministic sampler with the true-x0 oracle")


#: Steps N of the convergence-order runs, and T of the discrete schedule they run on.
ORDER_STEPS = (10, 20, 40)
ORDER_T = 1000
#: Steps of the runs whose sample moments are checked (at least; a sampler's own if more).
MOMENT_STEPS = 100
#: Largest error of any visited state at N = 40, in units of the marginal's std.
PATH_TOLERANCE = 1.0


def check_sampler_exact(classes: Chain, device: str = "cpu", configs: Configs | None = None
                        ) -> None:
    """On Gaussian data through a Gaussian-family degradation (see
    :mod:`corediff.testing_gaussian`; T = 1000 for a discrete schedule), with the exact
    denoiser: a deterministic sampler declaring an ``order`` visits states on the exact
    probability-flow ODE path (within PATH_TOLERANCE at N = 40), the error of its states
    falls at each halving of the step over N = 10, 20, 40, at the declared order over the last
    (observed rate ≥ order − 0.5), and its sample is at least as close to x*(0) as a
    first-order last step from its last state; a stochastic one (two seeds differ) at its
    default config (with at least MOMENT_STEPS steps) gives samples of the data's
    per-channel mean and standard deviation."""
    cls, schedule = classes["sampler"], classes["schedule"]
    config = (configs or {}).get("sampler") or make_config(cls)
    long = {"schedule": make_config(schedule, steps=ORDER_T)} if (
        "steps" in schedule.Config.model_fields) else {}
    built = build_chain(classes, device, configs={**(configs or {}), **long, "sampler": config})
    degradation, sampler = built["degradation"], built["sampler"]
    if not exact.gaussian_family(degradation):
        return
    x_T = exact.start(degradation, sampler.timesteps()[0], 32, 8, seed=15).to(device)
    first, second = (exact.sample_moments(sampler, built, x_T[:IMAGES], seed) for seed in (16, 17))
    assert bool(torch.isfinite(first[0]).all()), (
        f"{config!r} with {type(degradation).__name__}: non-finite samples (per-channel mean "
        f"{first[0].tolist()}) from the exact denoiser, starting at t = {sampler.timesteps()[0]}")
    if torch.equal(first[0], second[0]):
        if cls.order is not None and "steps" in cls.Config.model_fields:
            _check_order(cls, config, built, x_T[:IMAGES])
    elif not configs:  # a non-default config may change the distribution (a temperature)
        many = _with_steps(cls, config, MOMENT_STEPS)  # fewer steps: a discretisation bias
        if many is not None:
            sampler = cls(many, degradation=degradation,
                          parameterization=built["parameterization"])
        _check_moments(*exact.sample_moments(sampler, built, x_T, 16),
                       what=f"stochastic sampler {sampler.config!r}, {len(x_T)} samples")


def _with_steps(cls: type, config: ComponentConfig, steps: int) -> ComponentConfig | None:
    """``config`` with at least ``steps`` steps when it has a ``steps`` field that takes them."""
    current = getattr(config, "steps", steps)
    if current is None or current >= steps:
        return None
    try:
        return cls.Config.model_validate({**config.model_dump(), "steps": steps})
    except ValueError:
        return None


def _check_moments(mean: Tensor, std: Tensor, what: str) -> None:
    """Per-channel moments against the data's (4 standard errors + 3 % of s, 10 % on s)."""
    true_mean, true_std = (torch.tensor(v, dtype=torch.float64) for v in (exact.MEAN, exact.STD))
    count = 32 * 8 * 8
    mean_ok = (mean.cpu() - true_mean).abs() <= true_std * (4 / count**0.5 + 0.03)
    std_ok = (std.cpu() / true_std - 1).abs() <= 4 / (2 * count) ** 0.5 + 0.1
    assert bool(mean_ok.all() and std_ok.all()), (
        f"{what}: per-channel mean {mean.tolist()} (data {list(exact.MEAN)}), standard "
        f"deviation {std.tolist()} (data {list(exact.STD)})")


def _rate(errors: Mapping[int, float]) -> float:
    """The observed order: log2 of the error's fall over the last halving of the step
    (N = 20 → 40; at N = 10 stiff Gaussian data is not yet in the asymptotic regime), or 0
    when the error does not fall at each halving."""
    values = [errors[n] for n in ORDER_STEPS]
    if any(later >= earlier for earlier, later in itertools.pairwise(values)):
        return 0.0
    return math.log2(values[-2] / values[-1]) if values[-1] > 0 else math.inf


def _check_order(cls: type, config: ComponentConfig, built: dict[str, Any], x_T: Tensor) -> None:
    """The order checks of :func:`check_sampler_exact` (errors printed per N)."""
    runs = {}
    for n in ORDER_STEPS:
        sampler = cls(type(config).model_validate({**config.model_dump(), "steps": n}),
                      degradation=built["degradation"], parameterization=built["parameterization"])
        runs[n] = exact.path_errors(sampler, built, x_T)
    what = f"{cls.__name__} ({config!r}, declared order {cls.order})"
    t, error = runs[ORDER_STEPS[-1]].worst()
    assert error <= PATH_TOLERANCE, (
        f"{what}: the state at t = {t} is {error:.3g} marginal standard deviations off the exact "
        f"ODE path at N = {ORDER_STEPS[-1]} (allowed {PATH_TOLERANCE})")
    final = {n: run.final for n, run in runs.items()}
    floor = runs[ORDER_STEPS[-1]].floor
    if final[ORDER_STEPS[-1]] > 2 * floor + 1e-9:  # not limited by a fixed last jump to 0
        assert _rate(final) >= cls.order - 0.5, (
            f"{what}: the sample's error falls at rate {_rate(final):.2f} per halving of the "
            f"step; max |x − x*(0)| / s per N: {final}")
    visited = [{round(float(t), 9): e for t, e in run.states[1:]} for run in runs.values()]
    common = set.intersection(*(set(v) for v in visited))
    if common:
        states = {n: max(v[t] for t in common) for n, v in zip(runs, visited, strict=True)}
        if states[ORDER_STEPS[-1]] > 1e-9:
            assert _rate(states) >= cls.order - 0.5, (
                f"{what}: the error of the states at the times every N visits ({sorted(common)}"
                f") falls at rate {_rate(states):.2f}; worst per N: {states}")


def check_guidance(classes: Chain, device: str = "cpu", configs: Configs | None = None
                   ) -> None:
    """Equal outputs give the unguided prediction; unequal ones (the conditional output tanh(x),
    the unconditional one an unrelated field) satisfy each invariant the guidance declares
    (see GUIDANCE_INVARIANTS)."""
    built = build_chain(classes, device, configs=configs)
    guidance, param, degradation = built["guidance"], built["parameterization"], built[
        "degradation"]
    guidance.start()
    x0 = images(device)
    t = times(degradation, device, clean=False)
    x_t = degradation.degrade(x0, t, degradation.sample_noise(
        x0, torch.Generator(device).manual_seed(8)))
    out = torch.tanh(x_t).repeat(1, param.output_channels(3) // 3, 1, 1)
    active = [guidance.active(s) for s in t.tolist()]
    assert all(isinstance(a, bool) for a in active), f"{guidance.config!r}: active {active}"
    guided = guidance.combine(out, out, x_t, t)
    _close(guided.x0, param.predict(out, x_t, t).x0, 1e-5, "guidance of equal outputs", 1e-5)
    other = torch.randn(out.shape, generator=torch.Generator().manual_seed(18),
                        dtype=torch.float64).to(device)  # float64: invariants to 1e-5
    for name, overrides in type(guidance).invariants.items():
        assert name in GUIDANCE_INVARIANTS, (
            f"{type(guidance).__name__} declares invariant '{name}'; known: "
            f"{sorted(GUIDANCE_INVARIANTS)}")
        config = type(guidance.config).model_validate({**guidance.config.model_dump(),
                                                        **overrides})
        variant = type(guidance)(config, degradation=degradation, parameterization=param)
        variant.start()
        _check_invariant(name, variant, out.double(), other, x_t.double(), t)
    assert_round_trip(guidance.config)


#: What a guidance may declare, as the class attribute ``invariants = {name: config
#: overrides}``: with those overrides, for unequal conditional and unconditional outputs, ...
GUIDANCE_INVARIANTS = {
    "conditional": "... it returns the conditional prediction (CFG at scale 1)",
    "unconditional": "... it returns the unconditional prediction (CFG at scale 0)",
    "cfg": "... it is classifier-free guidance m(∅) + s·(m(y) − m(∅)) at its config's scale s",
    "orthogonal": "... its x̂0 minus the conditional x̂0 is orthogonal, per image, to the "
                  "conditional x̂0 (APG with η = 0)",
}


def _check_invariant(name: str, guidance: Any, cond: Tensor, uncond: Tensor, x_t: Tensor,
                     t: Tensor) -> None:
    param = guidance.parameterization
    guided = guidance.combine(cond, uncond, x_t, t).x0
    what = f"guidance {guidance.config!r}, invariant '{name}' ({GUIDANCE_INVARIANTS[name]})"
    if name == "orthogonal":
        base = param.predict(cond, x_t, t).x0.flatten(1)
        update = guided.flatten(1) - base
        cosine = (update * base).sum(1) / (update.norm(dim=1) * base.norm(dim=1) + 1e-30)
        assert bool((cosine.abs() < 1e-4).all()), f"{what}: cosines {cosine.tolist()}"
        return
    output = {"conditional": cond, "unconditional": uncond,
              "cfg": uncond + getattr(guidance.config, "scale", 1.0) * (cond - uncond)}[name]
    _close(guided, param.predict(output, x_t, t).x0, 1e-5, what, 1e-5)


def check_prior(classes: Chain, device: str = "cpu", configs: Configs | None = None
                ) -> None:
    """Seeded draws repeat, start in (0, t_max]; a prior declaring ``marginal = True`` (its
    draws follow the data's marginal at its start time), at its default config and with a
    Gaussian-family degradation, draws with the overall mean and standard deviation of the
    data degraded to its start time (within 25 %; the data: :func:`images`)."""
    prior = build_chain(classes, device, configs=configs)["prior"]
    shape = (IMAGES, 3, 8, 8)
    first = prior.sample(shape, generator=torch.Generator(device).manual_seed(5), device=device)
    second = prior.sample(shape, generator=torch.Generator(device).manual_seed(5), device=device)
    what = f"{prior.config!r}"
    assert first.shape == shape and torch.isfinite(first).all(), (
        f"{what}: draws {tuple(first.shape)} for {shape}, finite {bool(first.isfinite().all())}")
    assert first.device.type == torch.device(device).type, f"{what}: draws on {first.device}"
    assert torch.equal(first, second), f"{what}: seeded draws differ"
    start = prior.start_step()
    assert 0 < start <= prior.degradation.t_max, (
        f"{what}: start_step {start} outside (0, {prior.degradation.t_max}]")
    if not configs and prior.marginal and exact.gaussian_family(
            prior.degradation):
        _check_prior_moments(prior, device)
    assert_round_trip(prior.config)


def _check_prior_moments(prior: Any, device: str) -> None:
    degradation, many = prior.degradation, images(device).repeat(16, 1, 1, 1)
    generator = torch.Generator(device).manual_seed(19)
    reference = degradation.degrade(many, steps_like(prior.start_step(), many),
                                    degradation.sample_noise(many, generator))
    drawn = prior.sample(tuple(many.shape), generator=generator, device=device)
    std, mean = drawn.std().item(), drawn.mean().item()
    ref_std, ref_mean = reference.std().item(), reference.mean().item()
    assert 0.8 < std / ref_std < 1.25 and abs(mean - ref_mean) < 0.25 * ref_std, (
        f"{prior.config!r}: draws have mean {mean:.4g} and standard deviation {std:.4g}; the "
        f"data degraded to t = {prior.start_step()} has {ref_mean:.4g} and {ref_std:.4g}")


def check_time_sampler(classes: Chain, device: str = "cpu", configs: Configs | None = None
                       ) -> None:
    """Times [B] in (0, t_max] (steps 1..T when discrete), repeatable under a seed, finite
    positive importance weights, and ``observe`` + ``extra_state`` survive a round trip."""
    built = build_chain(classes, device, configs=configs)
    sampler, degradation = built["time_sampler"], built["degradation"]
    draw = [sampler.sample(64, torch.Generator(device).manual_seed(9), device) for _ in "ab"]
    (t, weight), (again, _) = draw
    what = f"{sampler.config!r}"
    assert t.shape == (64,) and t.device.type == torch.device(device).type, (
        f"{what}: times {tuple(t.shape)} on {t.device} for 64 on {device}")
    assert torch.equal(t, again), f"{what}: seeded draws must repeat"
    assert t.is_floating_point() != isinstance(degradation.t_max, int), (
        f"{what}: times are {t.dtype} for a degradation whose t_max is {degradation.t_max!r}")
    assert weight is None or (weight.shape == (64,) and torch.isfinite(weight).all()
                              and (weight > 0).all()), f"{what}: weights {weight.tolist()}"
    sampler.observe(t, torch.linspace(0.1, 1, 64, device=device))
    twin = type(sampler)(sampler.config, degradation=degradation)
    twin.load_extra_state(sampler.extra_state())
    assert all(torch.equal(a, b) for a, b in zip(twin.extra_state().values(),
                                                 sampler.extra_state().values(), strict=True)), (
        f"{what}: extra_state does not survive load_extra_state")
    _check_unbiased(sampler, degradation, device)
    assert_round_trip(sampler.config)


def _check_unbiased(sampler: Any, degradation: Any, device: str, count: int = 8192) -> None:
    """On many draws: times in (0, t_max], and importance weights w keep E[w·f(t)] the
    uniform-time mean of f (for f = 1, t/t_max, (t/t_max)²; uniform on the steps 1..T or on
    (0, t_max]), within 5 standard errors."""
    t, weight = sampler.sample(count, torch.Generator(device).manual_seed(20), device)
    t_max = degradation.t_max
    assert bool((t > 0).all() and (t <= t_max).all()), (
        f"{sampler.config!r}: of {count} draws, {int((t <= 0).sum())} are ≤ 0 and "
        f"{int((t > t_max).sum())} above t_max = {t_max} (range {t.min().item()} .. "
        f"{t.max().item()})")
    if weight is None:
        return
    u = t.double() / t_max
    grid = torch.arange(1, t_max + 1, dtype=torch.float64) / t_max if isinstance(
        t_max, int) else None
    for power in (0, 1, 2):
        values = weight.double() * u**power
        estimate, error = values.mean().item(), values.std().item() / count**0.5
        expected = grid.pow(power).mean().item() if grid is not None else 1 / (power + 1)
        assert abs(estimate - expected) <= 5 * error + 1e-3, (
            f"{sampler.config!r}: importance weights are biased: E[w·(t/t_max)^{power}] = "
            f"{estimate:.4f} ± {error:.4f} over {count} draws, uniform time gives "
            f"{expected:.4f} (weights {weight[:4].tolist()} at t = {t[:4].tolist()})")


def check_model(cls: type, device: str = "cpu", config: ComponentConfig | None = None) -> None:
    """Output shape, repeatable, at integer, fractional and boundary times (steps 0..T, and
    real times such as EDM's c_noise, float32 and float64), with labels, the null label
    ``num_classes`` and ``y=None`` (the same as the null label), and built unconditional
    (``num_classes=None``). With its weights moved off their initialisation (zero-initialised
    output layers hide what a network ignores): different labels, and a fractional t versus
    its integer neighbours, give different outputs."""
    config = config or cls.Config()
    spec = DataSpec(channels=3, image_size=16, num_classes=10)
    assert cls.check_data_spec(config, spec) == []

    def build(num_classes: int | None = spec.num_classes) -> Any:
        torch.manual_seed(6)
        return cls(config, in_channels=spec.channels, out_channels=6,
                   image_size=spec.image_size, num_classes=num_classes).to(device)

    model = build()
    assert model.null_label == spec.num_classes, (
        f"{config!r}: null_label {model.null_label}, num_classes {spec.num_classes}")
    x = images(device, size=16)
    t = torch.tensor([0, 1, 500, 999], device=device)
    y = torch.tensor([0, 1, 2, model.null_label], device=device)
    out = model(x, t, y)
    assert out.shape == (IMAGES, 6, 16, 16) and out.device == x.device, (
        f"{config!r}: output {tuple(out.shape)} on {out.device} for (4, 6, 16, 16) on {x.device}")
    assert torch.equal(out, build()(x, t, y)), f"{config!r}: two equally seeded builds differ"
    generator = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator).to(parameter))
        _check_model_inputs(model, x, t, y)
        unconditional = build(None)
        for when in _model_times(device):
            shape = unconditional(x, when).shape
            assert shape == out.shape, f"{config!r} built unconditional: output {tuple(shape)}"
    assert_round_trip(model.config)


def _model_times(device: str) -> list[Tensor]:
    """Times a network is called with: fractional and boundary steps (float64), EDM's c_noise
    and flow matching's 1000·t (float32)."""
    return [torch.tensor([0.0, 0.5, 999.5, 1000.0], dtype=torch.float64, device=device),
            torch.tensor([-1.6, 0.25, 1.1, 1000.0], device=device)]


def _check_model_inputs(model: Any, x: Tensor, t: Tensor, y: Tensor) -> None:
    what = f"model {model.config!r}"
    null = torch.full_like(y, model.null_label)
    for when in _model_times(x.device.type):
        for labels in (y, None):
            out = model(x, when, labels)
            assert out.shape == (IMAGES, 6, 16, 16) and torch.isfinite(out).all(), (
                f"{what} at t = {when.tolist()} ({when.dtype}), y = {labels}: output "
                f"{tuple(out.shape)}, finite {bool(torch.isfinite(out).all())}")
        _close(model(x, when), model(x, when, null), 1e-5, f"{what}: y=None is the null label")
    differ = (model(x, t, torch.zeros_like(y)) - model(x, t, torch.ones_like(y))).flatten(
        1).abs().amax(1)
    assert bool((differ > 1e-6).all()), f"{what}: labels 0 and 1 give the same output ({differ})"
    half = t.double() + 0.5
    for step in (t, t + 1):
        differ = (model(x, half, y) - model(x, step, y)).flatten(1).abs().amax(1)
        assert bool((differ > 1e-6).all()), (
            f"{what}: t = {half.tolist()} gives the output of t = {step.tolist()} ({differ})")


def write_image_folder(root: Path) -> Path:
    """Six small random PNGs in class folders cat/ and dog/ under root."""
    from PIL import Image

    generator = torch.Generator().manual_seed(7)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(3):
            pixels = torch.randint(0, 256, (20, 24, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / label / f"{index}.png")
    return root


def check_dataset(cls: type, device: str = "cpu") -> None:
    """A dataset with defaults (a required ``root`` gets a folder of generated PNGs)."""
    with tempfile.TemporaryDirectory() as tmp:
        required = {k for k, f in cls.Config.model_fields.items() if f.is_required()}
        root = write_image_folder(Path(tmp)) if "root" in required else None
        config = cls.Config(**({"root": str(root)} if root is not None else {}))
        dataset = cls(config)
        assert len(dataset) > 0
        image, label = dataset[0]
    assert image.shape == (dataset.channels, dataset.image_size, dataset.image_size)
    assert image.dtype == torch.float32 and image.min() >= -1 and image.max() <= 1
    assert isinstance(label, int)
    assert label == -1 if dataset.num_classes is None else 0 <= label < dataset.num_classes
    described = cls.describe(config)
    if described is not None:
        assert (described.channels, described.image_size) == (dataset.channels,
                                                               dataset.image_size)
    assert_round_trip(dataset.config)


def check_logger(cls: type, device: str = "cpu") -> None:
    """A logger with defaults: refused at validation, naming the pip command, when its
    packages are missing; else two sessions in a temporary folder (start, scalars, an image,
    close), the second resuming the first's tracker run (``start`` returns the same
    identity)."""
    config = cls.Config()
    assert_round_trip(config)
    refusals = cls.check_recipe(config, {})
    if cls.missing_packages():
        assert refusals and all("pip install" in why for why in refusals), refusals
        return
    assert refusals == []
    recipe = {"run": {"name": "conformance", "seed": 0}, "train": {"lr": 2e-4}}
    grid = torch.randint(0, 256, (10, 18, 3), generator=torch.Generator().manual_seed(8),
                         dtype=torch.uint8).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        identities = []
        for session, step in enumerate((0, 2)):
            logger = cls(config, run_dir=Path(tmp))
            try:
                identity = logger.start(recipe, tags={"seed": "0"}, step=step,
                                        resume=identities[-1] if session else None)
                json.dumps(identity)  # stored in the run directory between sessions
                identities.append(identity)
                for offset in (1, 2):
                    logger.log_scalars({"train/loss": 1.0 / (step + offset)}, step + offset)
                logger.log_image("samples", grid, step + 2)
            finally:
                logger.close()
        assert identities[0] == identities[1], f"a resumed run opened {identities}"


class _TinyNet(nn.Module):
    """The network :func:`check_objective` trains: one convolution, shifted by tanh(t)."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.shift = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.conv(x) + self.shift * t.to(x).tanh().view(-1, 1, 1, 1)


def _objective_chain(classes: Chain, device: str, seed: int) -> dict[str, Any]:
    """A chain with an objective, training a seeded :class:`_TinyNet`."""
    out = build_chain(classes)["parameterization"].output_channels(3)
    torch.manual_seed(seed)
    built = build_chain(classes, device, model=_TinyNet(3, out).to(device))
    for module in built["objective"].modules().values():
        module.to(device)
    return built


def check_objective(classes: Chain, device: str = "cpu") -> None:
    """An objective (with a teacher built from the same chain when it needs one): finite
    per-sample losses [B] and scalar logs; the mean's gradients reach the trained network and
    nothing else (the teacher's and the objective's own modules get none: they are
    constants); a validation call (``training=False``) changes no state; after an SGD step
    and :meth:`~corediff.interfaces.Objective.after_step` its ``extra_state`` goes
    through a safetensors file into a fresh objective, which then gives the same losses."""
    from safetensors.torch import load_file, save_file

    from corediff.interfaces import ObjectiveBatch
    from corediff.pipeline import Pipeline
    from corediff.sections import SampleConfig

    built = _objective_chain(classes, device, seed=10)
    objective, model, degradation = built["objective"], built["model"], built["degradation"]
    if objective.needs_teacher:
        teacher = _objective_chain(classes, device, seed=11)
        objective.teacher = Pipeline(recipe=SimpleNamespace(sample=SampleConfig()),
                                     data_spec=DataSpec(3, 8, 10), dataset=None, **teacher)
    x0, y = images(device), torch.tensor([0, 1, 2, 3], device=device)

    def batch(seed: int, training: bool) -> ObjectiveBatch:
        return ObjectiveBatch(x0, y, None, model, lambda t, noise: degradation.degrade(
            x0, t, noise), torch.Generator(device).manual_seed(seed), training, 0.5, 10)

    out = objective.losses(batch(12, training=True))
    assert out.per_sample.shape == (IMAGES,) and out.per_sample.dtype == torch.float32
    assert torch.isfinite(out.per_sample).all(), f"losses {out.per_sample.tolist()}"
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.logs.values()), out.logs
    out.per_sample.mean().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters()
               ), "no gradient reaches the trained network"
    others = [*objective.modules().values()] + (
        [objective.teacher.model] if objective.needs_teacher else [])
    assert all(p.grad is None for m in others for p in m.parameters()), \
        "gradients reach the teacher or the objective's own modules"
    with torch.no_grad():  # an SGD step (lr 0.1), then the objective's hook
        for p in model.parameters():
            p -= 0 if p.grad is None else 0.1 * p.grad
    objective.after_step(model, 1)
    state = {k: v.detach().clone() for k, v in objective.extra_state().items()}
    with torch.no_grad():
        expected = objective.losses(batch(13, training=False)).per_sample
    assert all(torch.equal(v, state[k]) for k, v in objective.extra_state().items()), \
        "a validation call (training=False) changed the objective's state"
    twin = type(objective)(objective.config, model=copy.deepcopy(model), **{
        dep: built[dep] for dep in BY_NAME["objective"].dependencies if dep != "model"})
    twin.teacher = objective.teacher
    for module in twin.modules().values():
        module.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.cpu().contiguous() for k, v in state.items()}, Path(tmp) / "s")
        twin.load_extra_state({k: v.to(device) for k, v in load_file(Path(tmp) / "s").items()})
    with torch.no_grad():
        _close(twin.losses(batch(13, training=False)).per_sample, expected, 1e-6,
               "losses after the state's round trip")
    assert_round_trip(objective.config)


CHECKS: dict[str, Callable[..., None]] = {
    "schedule": check_schedule, "degradation": check_degradation,
    "parameterization": check_parameterization, "loss_weighting": check_loss_weighting,
    "sampler": check_sampler, "guidance": check_guidance, "prior": check_prior,
    "time_sampler": check_time_sampler, "model": check_model, "dataset": check_dataset,
    "logger": check_logger, "objective": check_objective,
}
assert set(CHECKS) == set(BY_NAME), "every kind has a conformance check"


# -- configs drawn from the schema ----------------------------------------------------------
#: The kinds checked with non-default configs too (datasets need their data, loggers their
#: services, objectives their training set-up: defaults only).
VARIANT_KINDS = frozenset({"schedule", "degradation", "parameterization", "loss_weighting",
                           "sampler", "guidance", "prior", "time_sampler", "model"})


def variants(cls: type) -> list[ComponentConfig]:
    """Non-default configs from the plugin's schema: per field, the first alternative value
    the config accepts (a bool flipped, another Literal choice, a number doubled, halved or
    moved by one, a number for an optional field left None; for a model only its bools and
    choices, so that no variant is a larger network)."""
    base = make_config(cls)
    dump, found = base.model_dump(), []
    for name, field in cls.Config.model_fields.items():
        if name == "type":
            continue
        for value in _alternatives(field.annotation, dump[name], cls.kind != "model"):
            try:
                config = cls.Config.model_validate({**dump, name: value})
            except ValueError:  # pydantic's ValidationError: not a value this field takes
                continue
            if config != base:
                found.append(config)
                break
    return found


def _alternatives(annotation: Any, default: Any, numbers: bool) -> list[Any]:
    literals = [a for a in _flat_args(annotation) if isinstance(a, str | int | float)]
    if isinstance(default, bool):
        return [not default]
    if literals:
        return [a for a in literals if a != default]
    if not numbers:
        return []
    if isinstance(default, int | float):
        return [default * 2, default / 2, default + 1, default - 1, 0.5]
    return [10, 0.5] if default is None else []


def _flat_args(annotation: Any) -> list[Any]:
    """The values of the Literal types within ``annotation`` (through unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for a in typing.get_args(annotation) for v in _flat_args(a)] if origin else []


# -- cases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One conformance check: a plugin, its companions (diffusion kinds), a device, and the
    plugin's config (None: its default). ``broken``: why the plugin cannot be loaded (the
    case fails with it; the other plugins' cases run)."""

    kind: str
    name: str
    device: str
    chain: tuple[tuple[str, type], ...] = ()
    config: ComponentConfig | None = None
    broken: str = ""

    def __str__(self) -> str:
        degradation = dict(self.chain).get("degradation")
        with_ = f"-with-{degradation.Config.model_fields['type'].default}" if degradation else ""
        default = {} if self.config is None else make_config(_plugin(self)).model_dump()
        changed = "".join(f"-{k}={v}" for k, v in (self.config.model_dump().items() if
                                                    self.config else ()) if v != default[k])
        return f"{self.kind}-{self.name}{with_}{changed}-{self.device}"

    def run(self) -> None:
        """Run the check (raises AssertionError with what failed)."""
        assert not self.broken, self.broken
        configs = {} if self.config is None else {"configs": {self.kind: self.config}}
        if self.chain:
            CHECKS[self.kind](dict(self.chain), self.device, **configs)
        elif self.config is not None:
            CHECKS[self.kind](_plugin(self), self.device, self.config)
        else:
            CHECKS[self.kind](_plugin(self), self.device)


def _plugin(case: Case) -> type:
    return registry(case.kind).get(case.name)


def conformance_cases(
    kinds: Iterable[str] | None = None, names: Iterable[str] | None = None,
    devices: Iterable[str] | None = None, *, configs: bool = True,
) -> list[Case]:
    """Every check of every registered plugin (optionally only these kinds / plugin names),
    with its default config and, unless ``configs`` is False, with each of
    :func:`variants` that the recipe checks accept in its chain. A plugin that cannot be
    loaded gives one failing case saying why."""
    wanted = set(names) if names is not None else None
    cases = []
    for kind in kinds if kinds is not None else BY_NAME:
        broken = loadable(kind)[1]
        for name in registry(kind).names():
            if wanted is not None and name not in wanted:
                continue
            on = ["cpu"] if not BY_NAME[kind].in_pipeline else DEVICES  # loggers: no tensors
            if name in broken:
                cases.append(Case(kind, name, on[0], broken=broken[name]))
                continue
            cls = registry(kind).get(name)
            extra = variants(cls) if configs and kind in VARIANT_KINDS else []
            for device in devices if devices is not None else on:
                if kind not in DIFFUSION_KINDS:
                    cases += [Case(kind, name, device, config=c) for c in [None, *extra]]
                    continue
                for chain in chains(kind, name):
                    cases.append(Case(kind, name, device, tuple(chain.items())))
                    cases += [Case(kind, name, device, tuple(chain.items()), c) for c in extra
                              if _accepted(chain, kind, c)]
    return cases


def _accepted(chain: Chain, kind: str, config: ComponentConfig) -> bool:
    """Whether the recipe checks accept ``config`` for ``kind`` in ``chain``."""
    tables = {BY_NAME[k].table: c for k, c in chain.items()}
    configs = {BY_NAME[k].table: config if k == kind else make_config(c)
               for k, c in chain.items()}
    if check_compatibility(tables, configs) or check_components(tables, configs):
        return False
    needed, built = {kind}, {}
    for k in reversed(KINDS):  # the plugin and what it is built on, transitively
        if k.name in needed:
            needed |= set(k.dependencies)
    try:
        for k in KINDS:
            if k.name in needed and k.name in chain:
                built[k.name] = chain[k.name](config if k.name == kind else make_config(
                    chain[k.name]), **{dep: built[dep] for dep in k.dependencies})
    except (ValueError, CorediffError):  # refused when built: a combination recipes refuse
        return False
    return True


def check_plugin(kind: str, name: str, devices: Iterable[str] | None = None) -> int:
    """Run every conformance check of one plugin (default and schema-drawn configs); returns
    how many ran (at least 1)."""
    cases = [c for c in conformance_cases([kind], [name], devices)]
    assert cases, f"{kind} '{name}' is compatible with no chain of installed plugins"
    for case in cases:
        case.run()
    return len(cases)
