"""Conformance suites: every registered plugin of every kind, first- or third-party, passes
its interface's contract (shapes, dtype, device, determinism under a seeded generator,
config round-trip). A new plugin joins automatically through its entry point.

Companion components are chosen by capability: for each plugin, and each degradation it is
compatible with, the first compatible schedule/parameterization/... chain is built.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from corediff.builder import DataSpec
from corediff.config import ComponentConfig
from corediff.recipe import check_compatibility
from corediff.registry import registry

STEPS = 25
IMAGES = 4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DIFFUSION_KINDS = ("schedule", "degradation", "parameterization", "loss_weighting", "sampler",
                   "prior")


def names(kind: str) -> list[str]:
    return registry(kind).names()


def images(device: str = "cpu", channels: int = 3, size: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(IMAGES, channels, size, size, generator=generator) * 2 - 1
    return x.to(device)


def make_config(cls: type, **extra) -> ComponentConfig:
    fields = cls.Config.model_fields
    if "steps" in fields and cls.kind == "schedule":
        extra.setdefault("steps", STEPS)
    return cls.Config(**extra)


def chains(kind: str, name: str) -> list[dict[str, type]]:
    """For each degradation compatible with plugin (kind, name): the first full chain of
    diffusion components that passes the recipe compatibility check."""
    target = registry(kind).get(name)
    options = {k: [target] if k == kind else [registry(k).get(n) for n in names(k)]
               for k in DIFFUSION_KINDS}
    found: dict[type, dict[str, type]] = {}
    for combo in itertools.product(*options.values()):
        classes = dict(zip(DIFFUSION_KINDS, combo, strict=True))
        if classes["degradation"] in found:
            continue
        if not check_compatibility({("diffusion", k): c for k, c in classes.items()}):
            found[classes["degradation"]] = classes
    return list(found.values())


def build_chain(classes: dict[str, type], device: str = "cpu") -> dict[str, object]:
    x = images(device)
    built: dict[str, object] = {}
    built["schedule"] = classes["schedule"](make_config(classes["schedule"]))
    built["degradation"] = classes["degradation"](
        make_config(classes["degradation"]), schedule=built["schedule"])
    deps = {"degradation": built["degradation"]}
    built["parameterization"] = classes["parameterization"](
        make_config(classes["parameterization"]), **deps)
    deps["parameterization"] = built["parameterization"]
    built["loss_weighting"] = classes["loss_weighting"](
        make_config(classes["loss_weighting"]), **deps)
    built["sampler"] = classes["sampler"](make_config(classes["sampler"]), **deps)
    built["prior"] = classes["prior"](make_config(classes["prior"]),
                                      degradation=built["degradation"])
    for component in built.values():
        component.fit(x.cpu())
    return built


def cases(kind: str) -> list:
    params = []
    for name in names(kind):
        for classes in chains(kind, name):
            label = f"{name}-with-{classes['degradation'].Config.model_fields['type'].default}"
            params.append(pytest.param(classes, id=label))
    return params


def assert_round_trip(config: ComponentConfig) -> None:
    cls = type(config)
    assert cls.model_validate(config.model_dump()) == config
    assert cls.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(Exception):  # noqa: B017 - frozen: any pydantic/attribute error
        config.type = "changed"  # type: ignore[misc]


# -- schedules ------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", cases("schedule"))
def test_schedule_contract(classes):
    schedule = build_chain(classes)["schedule"]
    values = schedule.values()
    assert values.dtype == torch.float64 and values.shape == (schedule.steps + 1,)
    assert torch.isfinite(values).all()
    assert torch.equal(values, schedule.values())
    assert_round_trip(schedule.config)


# -- degradations ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("classes", cases("degradation"))
def test_degradation_contract(classes, device):
    degradation = build_chain(classes, device)["degradation"]
    x0 = images(device)
    t = torch.tensor([0, 1, STEPS // 2, STEPS], device=device)
    generator = torch.Generator(device).manual_seed(1)
    noise = degradation.sample_noise(x0, generator)
    out = degradation.degrade(x0, t, noise)
    assert out.shape == x0.shape and out.dtype == x0.dtype and out.device == x0.device
    torch.testing.assert_close(out[0], x0[0], atol=1e-5, rtol=0)  # D(x0, 0) = x0
    assert torch.equal(out, degradation.degrade(x0, t, noise))  # deterministic given noise
    again = degradation.sample_noise(x0, torch.Generator(device).manual_seed(1))
    assert (noise is None) == (again is None) and (noise is None or torch.equal(noise, again))
    many = degradation.degrade_many(x0, [t, t.clamp(min=1) - 1], noise)
    torch.testing.assert_close(many[0], out)
    torch.testing.assert_close(many[1], degradation.degrade(x0, t.clamp(min=1) - 1, noise))
    assert_round_trip(degradation.config)


# -- parameterizations ----------------------------------------------------------------------
@pytest.mark.parametrize("classes", cases("parameterization"))
def test_parameterization_contract(classes):
    built = build_chain(classes)
    param, degradation = built["parameterization"], built["degradation"]
    x0 = images()
    t = torch.tensor([1, 2, STEPS // 2, STEPS])
    noise = degradation.sample_noise(x0, torch.Generator().manual_seed(2))
    x_t = degradation.degrade(x0, t, noise)
    output = torch.randn(IMAGES, param.output_channels(3), 8, 8,
                         generator=torch.Generator().manual_seed(3))
    prediction = param.predict(output, x_t, t)
    assert prediction.x0.shape == x0.shape and torch.isfinite(prediction.x0).all()
    target = param.target(x0, x_t, t, noise)
    assert target.shape == x0.shape
    per_sample = param.loss(output, x0, x_t, t, noise, lambda a, b: (a - b).square())
    assert per_sample.shape == (IMAGES,) and torch.isfinite(per_sample).all()
    assert param.x0_loss_scale(t).shape == (IMAGES,)
    assert_round_trip(param.config)


# -- loss weightings ------------------------------------------------------------------------
@pytest.mark.parametrize("classes", cases("loss_weighting"))
def test_loss_weighting_contract(classes):
    weighting = build_chain(classes)["loss_weighting"]
    t = torch.arange(1, STEPS + 1)
    weight = weighting.weight(t)
    assert weight.shape == t.shape and weight.is_floating_point()
    assert torch.isfinite(weight).all() and (weight >= 0).all()
    assert torch.equal(weight, weighting.weight(t))
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert weighting.per_element(a, b).shape == a.shape
    assert_round_trip(weighting.config)


# -- samplers -------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("classes", cases("sampler"))
def test_sampler_contract(classes, device):
    built = build_chain(classes, device)
    sampler, param = built["sampler"], built["parameterization"]
    x_T = images(device)

    def model(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        out = torch.tanh(x) * 0.5
        return out.repeat(1, param.output_channels(3) // 3, 1, 1)

    steps = sampler.timesteps()
    assert steps == sorted(steps, reverse=True) and steps[0] == STEPS and steps[-1] >= 1
    runs = [sampler.sample(model, x_T, generator=torch.Generator(device).manual_seed(4),
                           trajectory=True) for _ in range(2)]
    result = runs[0]
    assert result.sample.shape == x_T.shape and result.sample.device == x_T.device
    assert result.sample.dtype == x_T.dtype and torch.isfinite(result.sample).all()
    assert result.direct.shape == x_T.shape
    assert torch.equal(result.sample, runs[1].sample)  # deterministic under a seeded generator
    assert [step.t for step in result.trajectory] == steps
    assert_round_trip(sampler.config)


# -- priors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", cases("prior"))
def test_prior_contract(classes):
    prior = build_chain(classes)["prior"]
    shape = (IMAGES, 3, 8, 8)
    first = prior.sample(shape, generator=torch.Generator().manual_seed(5))
    second = prior.sample(shape, generator=torch.Generator().manual_seed(5))
    assert first.shape == shape and torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert 0 < prior.start_step() <= STEPS
    assert_round_trip(prior.config)


# -- models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", names("model"))
def test_model_contract(name, device):
    cls = registry("model").get(name)
    spec = DataSpec(channels=3, image_size=16, num_classes=10)

    def build():
        torch.manual_seed(6)
        return cls(cls.Config(), in_channels=spec.channels, out_channels=6,
                   image_size=spec.image_size, num_classes=spec.num_classes).to(device)

    model = build()
    x = images(device, size=16)
    t = torch.tensor([0, 1, 500, 999], device=device)
    out = model(x, t, torch.tensor([0, 1, 2, 10], device=device))
    assert out.shape == (IMAGES, 6, 16, 16) and out.device == x.device
    assert torch.equal(out, build()(x, t, torch.tensor([0, 1, 2, 10], device=device)))
    assert model(x, t).shape == out.shape  # y=None: unconditional
    assert_round_trip(model.config)


# -- datasets -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(7)
    for label in ("cat", "dog"):
        (root / label).mkdir()
        for index in range(3):
            pixels = torch.randint(0, 256, (20, 24, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / label / f"{index}.png")
    return root


@pytest.mark.parametrize("name", names("dataset"))
def test_dataset_contract(name, image_root):
    cls = registry("dataset").get(name)
    required = {k for k, f in cls.Config.model_fields.items() if f.is_required()}
    config = cls.Config(**({"root": str(image_root)} if "root" in required else {}))
    dataset = cls(config)
    assert len(dataset) > 0
    image, label = dataset[0]
    assert image.shape == (dataset.channels, dataset.image_size, dataset.image_size)
    assert image.dtype == torch.float32 and image.min() >= -1 and image.max() <= 1
    assert isinstance(label, int)
    assert label == -1 if dataset.num_classes is None else 0 <= label < dataset.num_classes
    assert_round_trip(dataset.config)
