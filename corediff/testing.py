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
built (small T, 8×8 images). What is checked, per kind:

* schedule: ``values()`` float64 [T + 1], finite, repeatable;
* degradation: shape/dtype/device kept, ``D(x0, 0) = x0``, deterministic given the noise,
  seeded noise repeatable, ``degrade_many`` equal to ``degrade``;
* parameterization: finite x̂0, target and per-sample loss of the right shapes;
* loss weighting: finite non-negative weights [B], repeatable;
* sampler: descending steps from T, seeded runs repeatable, the trajectory visits
  ``timesteps()``, ``nfe`` equals ``nfe()`` and the network calls made; a deterministic
  sampler driven by the true-x0 oracle (the network output whose prediction is x0) returns
  the data (:func:`check_sampler_oracle`);
* guidance: the combination of two equal outputs is the unguided prediction;
* prior: seeded samples repeatable, start time in (0, t_max];
* time sampler: times in (0, t_max] of the degradation's kind, repeatable, positive
  importance weights, its state round-trips;
* model: output shape, repeatable, takes the null label ``num_classes`` and ``y=None``;
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
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from corediff.config import ComponentConfig
from corediff.denoiser import Denoiser
from corediff.interfaces import DataSpec
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


def chains(kind: str, name: str) -> list[Chain]:
    """For each degradation compatible with plugin (kind, name): the first chain of diffusion
    component classes (one per diffusion kind) that passes the compatibility check."""
    target = registry(kind).get(name)
    options = {k: [target] if k == kind else [registry(k).get(n) for n in registry(k).names()]
               for k in DIFFUSION_KINDS}
    found: dict[type, Chain] = {}

    def extend(chain: Chain) -> None:
        """Depth first in the kinds' order, pruning a partial chain as soon as two of its
        components are incompatible (requirements are between pairs): the same first chain
        per degradation as trying every combination in order, without trying them all."""
        if check_compatibility({BY_NAME[k].table: c for k, c in chain.items()}):
            return
        if len(chain) == len(DIFFUSION_KINDS):
            tables = {BY_NAME[k].table: c for k, c in chain.items()}
            if not check_components(tables, {t: make_config(c) for t, c in tables.items()}):
                found.setdefault(chain["degradation"], dict(chain))
            return
        next_kind = DIFFUSION_KINDS[len(chain)]
        for option in options[next_kind]:
            if "degradation" in chain and chain["degradation"] in found:
                return
            extend({**chain, next_kind: option})

    extend({})
    return list(found.values())


def build_chain(classes: Chain, device: str = "cpu", model: Any = None) -> dict[str, Any]:
    """Build a chain with default configs (in the kinds table's order) and fit it on images;
    the objective only when ``model`` (the network it trains) is given."""
    built: dict[str, Any] = {} if model is None else {"model": model}
    for kind in KINDS:
        if kind.name in classes and all(dep in built for dep in kind.dependencies):
            cls = classes[kind.name]
            deps = {dep: built[dep] for dep in kind.dependencies}
            built[kind.name] = cls(make_config(cls), **deps)
    for kind, component in built.items():
        if kind != "model":
            component.fit(images(device).cpu())
    return built


def assert_round_trip(config: ComponentConfig) -> None:
    """A config survives dump/validate and JSON, and is frozen."""
    cls = type(config)
    assert cls.model_validate(config.model_dump()) == config
    assert cls.model_validate_json(config.model_dump_json()) == config
    try:
        config.type = "changed"  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - pydantic raises its own frozen error
        return
    raise AssertionError(f"config {cls.__name__} is not frozen")


def _close(actual: Tensor, expected: Tensor, atol: float, what: str, rtol: float = 0) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


# -- per kind ------------------------------------------------------------------------------
def check_schedule(classes: Chain, device: str = "cpu") -> None:
    schedule = build_chain(classes)["schedule"]
    values = schedule.values()
    assert values.dtype == torch.float64 and values.shape == (schedule.steps + 1,)
    assert torch.isfinite(values).all()
    assert torch.equal(values, schedule.values())
    assert_round_trip(schedule.config)


def check_degradation(classes: Chain, device: str = "cpu") -> None:
    degradation = build_chain(classes, device)["degradation"]
    x0 = images(device)
    t = times(degradation, device)
    noise = degradation.sample_noise(x0, torch.Generator(device).manual_seed(1))
    out = degradation.degrade(x0, t, noise)
    assert out.shape == x0.shape and out.dtype == x0.dtype and out.device == x0.device
    _close(out[0], x0[0], 1e-5, "D(x0, 0) = x0")
    assert torch.equal(out, degradation.degrade(x0, t, noise)), "deterministic given noise"
    again = degradation.sample_noise(x0, torch.Generator(device).manual_seed(1))
    assert (noise is None) == (again is None) and (noise is None or torch.equal(noise, again))
    assert (noise is None) == ("deterministic" in degradation.provides)
    many = degradation.degrade_many(x0, [t, earlier(t)], noise)
    _close(many[0], out, 1e-5, "degrade_many[0]")
    _close(many[1], degradation.degrade(x0, earlier(t), noise), 1e-5, "degrade_many[1]")
    assert_round_trip(degradation.config)


def check_parameterization(classes: Chain, device: str = "cpu") -> None:
    built = build_chain(classes, device)
    param, degradation = built["parameterization"], built["degradation"]
    x0 = images(device)
    t = times(degradation, device, clean=False)
    noise = degradation.sample_noise(x0, torch.Generator(device).manual_seed(2))
    x_t = degradation.degrade(x0, t, noise)
    output = torch.randn(IMAGES, param.output_channels(3), 8, 8,
                         generator=torch.Generator().manual_seed(3)).to(device)
    prediction = param.predict(output, x_t, t)
    assert prediction.x0.shape == x0.shape and torch.isfinite(prediction.x0).all()
    assert param.target(x0, x_t, t, noise).shape == x0.shape
    per_sample = param.loss(output, x0, x_t, t, noise, lambda a, b: (a - b).square())
    assert per_sample.shape == (IMAGES,) and torch.isfinite(per_sample).all()
    assert param.x0_loss_scale(t).shape == (IMAGES,)
    x_in, t_in = param.condition(x_t, t)
    assert x_in.shape == x_t.shape and t_in.shape == (IMAGES,) and torch.isfinite(t_in).all()
    assert_round_trip(param.config)


def check_loss_weighting(classes: Chain, device: str = "cpu") -> None:
    built = build_chain(classes, device)
    weighting, t_max = built["loss_weighting"], built["degradation"].t_max
    t = (torch.arange(1, STEPS + 1, device=device) if isinstance(t_max, int) else
         torch.linspace(0.01, 1, STEPS, dtype=torch.float64, device=device) * t_max)
    weight = weighting.weight(t)
    assert weight.shape == t.shape and weight.is_floating_point()
    assert torch.isfinite(weight).all() and (weight >= 0).all()
    assert torch.equal(weight, weighting.weight(t))
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert weighting.per_element(a, b).shape == a.shape
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


def check_sampler(classes: Chain, device: str = "cpu") -> None:
    built = build_chain(classes, device)
    sampler, param, t_max = built["sampler"], built["parameterization"], built[
        "degradation"].t_max
    x_T = images(device)
    calls = []

    def model(x: Tensor, t: Tensor) -> Tensor:
        assert t.shape == (x.shape[0],) and torch.isfinite(t).all()
        calls.append(1)
        return (torch.tanh(x) * 0.5).repeat(1, param.output_channels(3) // 3, 1, 1)

    steps = sampler.timesteps()
    assert steps == sorted(steps, reverse=True) and steps[0] == t_max and steps[-1] > 0
    runs = [sampler.sample(model, x_T, generator=torch.Generator(device).manual_seed(4),
                           trajectory=True) for _ in range(2)]
    result = runs[0]
    assert result.sample.shape == x_T.shape and result.sample.device == x_T.device
    assert result.sample.dtype == x_T.dtype and torch.isfinite(result.sample).all()
    assert result.direct.shape == x_T.shape
    assert torch.equal(result.sample, runs[1].sample), "seeded runs must repeat"
    assert [step.t for step in result.trajectory] == steps
    assert result.nfe == sampler.nfe() == len(calls) // 2, (
        f"nfe: result {result.nfe}, nfe() {sampler.nfe()}, network calls {len(calls) // 2}")
    check_sampler_oracle(classes, device)
    assert_round_trip(sampler.config)


class _RawDenoiser(Denoiser):
    """A Denoiser that gives its network the raw (x_t, t), not the parameterization's
    conditioned input: what :func:`oracle` reads."""

    def output(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        self.evaluations += 1
        return self.network(x, t)


def check_sampler_oracle(classes: Chain, device: str = "cpu") -> None:
    """A deterministic sampler (same result under two different seeds) driven by the true-x0
    oracle from x_T = D(x0, T) returns x0 (float64, to 1e-6)."""
    built = build_chain(classes, device)
    sampler, degradation = built["sampler"], built["degradation"]
    x0 = images(device, dtype=torch.float64)
    t = times(degradation, device)[-1].repeat(IMAGES)
    x_T = degradation.degrade(x0, t, degradation.sample_noise(
        x0, torch.Generator(device).manual_seed(5)))
    network = _RawDenoiser(oracle(built, x0), built["parameterization"])
    first, second = (sampler.sample(network, x_T, generator=torch.Generator(device).manual_seed(s))
                     for s in (6, 7))
    if torch.equal(first.sample, second.sample):
        _close(first.sample, x0, 1e-6, "deterministic sampler with the true-x0 oracle")


def check_guidance(classes: Chain, device: str = "cpu") -> None:
    built = build_chain(classes, device)
    guidance, param, degradation = built["guidance"], built["parameterization"], built[
        "degradation"]
    x0 = images(device)
    t = times(degradation, device, clean=False)
    x_t = degradation.degrade(x0, t, degradation.sample_noise(
        x0, torch.Generator(device).manual_seed(8)))
    out = torch.tanh(x_t).repeat(1, param.output_channels(3) // 3, 1, 1)
    assert all(isinstance(guidance.active(s), bool) for s in t.tolist())
    guided = guidance.combine(out, out, x_t, t)
    _close(guided.x0, param.predict(out, x_t, t).x0, 1e-5, "guidance of equal outputs", 1e-5)
    assert_round_trip(guidance.config)


def check_prior(classes: Chain, device: str = "cpu") -> None:
    prior = build_chain(classes, device)["prior"]
    shape = (IMAGES, 3, 8, 8)
    first = prior.sample(shape, generator=torch.Generator(device).manual_seed(5), device=device)
    second = prior.sample(shape, generator=torch.Generator(device).manual_seed(5), device=device)
    assert first.shape == shape and torch.isfinite(first).all()
    assert first.device.type == torch.device(device).type
    assert torch.equal(first, second)
    assert 0 < prior.start_step() <= prior.degradation.t_max
    assert_round_trip(prior.config)


def check_time_sampler(classes: Chain, device: str = "cpu") -> None:
    """Times [B] in (0, t_max] (steps 1..T when discrete), repeatable under a seed, finite
    positive importance weights, and ``observe`` + ``extra_state`` survive a round trip."""
    built = build_chain(classes, device)
    sampler, degradation = built["time_sampler"], built["degradation"]
    draw = [sampler.sample(64, torch.Generator(device).manual_seed(9), device) for _ in "ab"]
    (t, weight), (again, _) = draw
    assert t.shape == (64,) and t.device.type == torch.device(device).type
    assert torch.equal(t, again), "seeded draws must repeat"
    assert (t > 0).all() and (t <= degradation.t_max).all()
    assert t.is_floating_point() != isinstance(degradation.t_max, int)
    assert weight is None or (weight.shape == (64,) and torch.isfinite(weight).all()
                              and (weight > 0).all())
    sampler.observe(t, torch.linspace(0.1, 1, 64, device=device))
    twin = type(sampler)(sampler.config, degradation=degradation)
    twin.load_extra_state(sampler.extra_state())
    assert all(torch.equal(a, b) for a, b in zip(twin.extra_state().values(),
                                                 sampler.extra_state().values(), strict=True))
    assert_round_trip(sampler.config)


def check_model(cls: type, device: str = "cpu") -> None:
    spec = DataSpec(channels=3, image_size=16, num_classes=10)
    assert cls.check_data_spec(cls.Config(), spec) == []

    def build() -> Any:
        torch.manual_seed(6)
        return cls(cls.Config(), in_channels=spec.channels, out_channels=6,
                   image_size=spec.image_size, num_classes=spec.num_classes).to(device)

    model = build()
    assert model.null_label == spec.num_classes
    x = images(device, size=16)
    t = torch.tensor([0, 1, 500, 999], device=device)
    y = torch.tensor([0, 1, 2, model.null_label], device=device)
    out = model(x, t, y)
    assert out.shape == (IMAGES, 6, 16, 16) and out.device == x.device
    assert torch.equal(out, build()(x, t, y))
    assert model(x, t).shape == out.shape  # y=None: unconditional
    assert_round_trip(model.config)


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


# -- cases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One conformance check: a plugin, its companions (diffusion kinds) and a device."""

    kind: str
    name: str
    device: str
    chain: tuple[tuple[str, type], ...] = ()

    def __str__(self) -> str:
        degradation = dict(self.chain).get("degradation")
        with_ = f"-with-{degradation.Config.model_fields['type'].default}" if degradation else ""
        return f"{self.kind}-{self.name}{with_}-{self.device}"

    def run(self) -> None:
        """Run the check (raises AssertionError with what failed)."""
        if self.chain:
            CHECKS[self.kind](dict(self.chain), self.device)
        else:
            CHECKS[self.kind](registry(self.kind).get(self.name), self.device)


def conformance_cases(
    kinds: Iterable[str] | None = None, names: Iterable[str] | None = None,
    devices: Iterable[str] | None = None,
) -> list[Case]:
    """Every check of every registered plugin (optionally only these kinds / plugin names)."""
    wanted = set(names) if names is not None else None
    cases = []
    for kind in kinds if kinds is not None else BY_NAME:
        for name in registry(kind).names():
            if wanted is not None and name not in wanted:
                continue
            on = ["cpu"] if not BY_NAME[kind].in_pipeline else DEVICES  # loggers: no tensors
            for device in devices if devices is not None else on:
                if kind in DIFFUSION_KINDS:
                    chained = chains(kind, name)
                    cases += [Case(kind, name, device, tuple(c.items())) for c in chained]
                else:
                    cases.append(Case(kind, name, device))
    return cases


def check_plugin(kind: str, name: str, devices: Iterable[str] | None = None) -> int:
    """Run every conformance check of one plugin; returns how many ran (at least 1)."""
    cases = [c for c in conformance_cases([kind], [name], devices)]
    assert cases, f"{kind} '{name}' is compatible with no chain of installed plugins"
    for case in cases:
        case.run()
    return len(cases)
