"""Host→device copies and host syncs in hot paths, seen on this CPU (issue 20): a copy from
the host makes a CUDA host wait for its queue, but ``.to("cpu")`` on a CPU is a no-op, so the
steps run on PyTorch's ``meta`` device as a stand-in for a GPU. There a sync cannot pass
unseen: ``.item()``, ``bool()``, ``.tolist()``, ``.cpu()`` and ``nonzero`` raise on a meta
tensor, and a dispatch-level spy counts every op taking a CPU tensor and giving a tensor
elsewhere: a host→device copy, or a tensor built from Python data (``torch.tensor(...,
device=...)``). Training steps (Gaussian, SVD with device and host factor caches, flow, EDM,
loss-aware times) and every registered sampler run there; after the first step (sampling:
the first run), the copies left are the ones :data:`PER_STEP` lists with their reason."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import corediff
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer
from corediff.kinds import BY_NAME
from corediff.registry import registry
from corediff.testing import build_chain, chains
from corediff_plugins.degradations.svd import SVDConfig, SVDDegradation, SVDFactors
from corediff_plugins.schedules.rank_energy import RankEnergyConfig, RankEnergySchedule
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule

META = torch.device("meta")
ROOT = Path(__file__).resolve().parents[1]
OURS = (str(ROOT / "corediff"), str(ROOT / "plugins"))
COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}
#: The host→device copies a training step may make once its first step is done, by
#: "file:function" of the corediff line making them, with the reason each is there.
PER_STEP = {
    "factor_cache.py:degrade": "the batch's dataset indices, one non-blocking copy (pinned "
                               "by the CUDA data loader) beside the batch's images",
    "factor_cache.py:_gather": "host placement: the batch's factors, gathered and pinned on "
                               "the host, copied without blocking (the placement's cost)",
}


def caller() -> str:
    """"file:function" of the innermost corediff or first-party plugin frame."""
    frame = sys._getframe(1)
    while frame is not None and (not frame.f_code.co_filename.startswith(OURS)
                                 or frame.f_code.co_name.startswith("<")):  # comprehensions
        frame = frame.f_back
    return "?" if frame is None else f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"


#: Tensors built from Python data, which torch makes on the host and copies outside dispatch.
BUILDERS = ((torch, "tensor"), (torch, "as_tensor"), (torch.Tensor, "new_tensor"))


class HostToDevice(TorchDispatchMode):
    """Records each op that reads a host (CPU) tensor and returns a tensor on another
    device: a host→device copy (of a 0-dim tensor too; a CPU scalar operand of another op
    is passed by value and not counted), and each tensor built from Python data elsewhere
    than on the host (``torch.tensor``, ``torch.as_tensor``, ``Tensor.new_tensor``)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[str] = []
        self.patch = pytest.MonkeyPatch()

    def __enter__(self):
        for owner, name in BUILDERS:
            self.patch.setattr(owner, name, self._spy(getattr(owner, name), name))
        return super().__enter__()

    def _spy(self, original, name: str):
        def spy(*args, **kwargs):
            out = original(*args, **kwargs)
            if out.device.type != "cpu":
                self.copies.append(f"{name} at {caller()}")
            return out

        return spy

    def __exit__(self, *exc):
        self.patch.undo()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
        outputs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if any(a.device.type == "cpu" and (a.dim() > 0 or func in COPIES) for a in inputs) \
                and any(o.device.type != "cpu" for o in outputs):
            self.copies.append(f"{func} at {caller()}")
        return out


def _factors(batch: int = 4, size: int = 8) -> SVDFactors:
    return SVDFactors(torch.empty(batch, 1, size, size, device=META),
                      torch.empty(batch, 1, size, device=META),
                      torch.empty(batch, 1, size, size, device=META))


def test_the_spy_sees_a_host_to_device_copy() -> None:
    with HostToDevice() as spy:
        torch.arange(5).to(META)
        torch.tensor(0.5, device=META)  # a tensor built from Python data
        torch.empty(3, device=META) + 1
        torch.empty(3, device=META) * torch.tensor(2.0)  # a CPU scalar operand: by value
    assert len(spy.copies) == 2, spy.copies
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.empty((), device=META).item()  # a sync cannot pass unseen on the stand-in


def test_svd_steps_copy_the_rank_table_once() -> None:
    degradation = SVDDegradation(SVDConfig(), schedule=RankLinearSchedule(
        RankLinearConfig(steps=20)))
    factors = _factors()
    t = torch.zeros(4, dtype=torch.long, device=META)
    with HostToDevice() as spy:
        for _ in range(5):
            degradation.degrade_from_factors(factors, t)
    assert len(spy.copies) == 1, spy.copies  # the first step builds the table on the device


def test_a_refitted_schedule_gets_a_new_table() -> None:
    schedule = RankEnergySchedule(RankEnergyConfig(steps=10))
    degradation = SVDDegradation(SVDConfig(), schedule=schedule)
    schedule.load_extra_state({"error_curve": torch.linspace(1, 0, 9, dtype=torch.float64)})
    first = degradation.ranks(8).clone()
    schedule.load_extra_state({"error_curve": torch.linspace(1, 0, 9, dtype=torch.float64) ** 3})
    assert not torch.equal(first, degradation.ranks(8))


RECIPES = {
    "gaussian": ("recipes/quickstart.toml", []),
    "svd_device_cache": ("studies/recipes/svd_digits16.toml", ["train.factor_cache='device'"]),
    "svd_host_cache": ("studies/recipes/svd_digits16.toml",
                       ["train.factor_cache='host'", "train.factor_dtype='float16'"]),
    "flow": ("recipes/flow_digits.toml", []),
    "edm": ("recipes/edm_digits.toml", []),
    "loss_aware": ("recipes/quickstart.toml", [
        "diffusion.schedule.steps=20", "diffusion.sampler.steps=5",
        "diffusion.time_sampler={type='loss_aware', history=2}"]),
    "consistency_training": ("recipes/few_step_ct.toml", ["data.image_size=16"]),
}


class _Autocast:
    """torch.autocast that is a no-op on the meta device (which autocast refuses)."""

    original = torch.autocast

    def __init__(self, device_type: str, *args, **kwargs) -> None:
        self.inner = contextlib.nullcontext() if device_type == "meta" else \
            self.original(device_type, *args, **kwargs)

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


def _to_meta(value):
    return value.to(META) if isinstance(value, torch.Tensor) and value.device != META else value


def _stand_in(trainer: Trainer) -> None:
    """Move a trainer that stepped on the CPU to the meta device: weights, EMA, AdamW's
    moments (its step counters stay on the host, as on CUDA), the components' state and a
    device-placed factor cache; a host-placed cache keeps its factors on the host. The meta
    device has no generator, so draws take the global one (on the device, as a CUDA
    generator's do)."""
    for module in (trainer.model, trainer.ema.module,
                   *trainer.pipeline.objective.modules().values()):
        module.to(META)
    for state in trainer.optimizer.state.values():
        state.update({k: _to_meta(v) for k, v in state.items() if k != "step"})
    for component in trainer.pipeline.components().values():
        if hasattr(component, "_move"):
            component._move(META)
    trainer.generator = None
    trainer.context = dataclasses.replace(trainer.context, device=META)
    cache = trainer.factor_cache
    if cache is not None:
        if cache.placement == "device":
            cache.parts = [_to_meta(part) for part in cache.parts]
            cache.storage_device = META
        cache.device = META
        for name in ("fingerprints", "_weights", "mismatch"):
            setattr(cache, name, _to_meta(getattr(cache, name)))


@pytest.mark.parametrize("name", list(RECIPES))
def test_training_steps_on_a_stand_in_device(name: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Four batches train once on the CPU (filling any factor cache: with host placement
    the first epoch's factors go to the host, a listed sync), then on the meta device:
    its first step may copy per-device tables; the next steps only what PER_STEP lists."""
    path, extra = RECIPES[name]
    recipe = corediff.load_recipe(ROOT / path, overrides=[
        "train.batch_size=8", "train.precision='fp32'", "model.preset='tiny'",
        "data.split='test'", "train.grad_accum=2", *extra])
    trainer = Trainer(corediff.build(recipe), RunDir(tmp_path), Context(torch.device("cpu")))
    trainer.fit_components()
    batches = list(itertools.islice(trainer.batches(), 4))
    epoch = iter(batches)
    for _ in range(2):
        trainer.train_step(epoch)
    assert (trainer.factor_cache is None) == (not name.startswith("svd"))
    monkeypatch.setattr(torch, "autocast", _Autocast)
    _stand_in(trainer)
    on_meta = iter([(i, x0.to(META), None if y is None else y.to(META))
                    for i, x0, y in batches] * 3)
    with HostToDevice():
        loss, norm, _ = trainer.train_step(on_meta)  # per-device tables are built here
    assert loss.device == norm.device == META
    staging = set()  # host placement: the host buffers the batches' factors pass through
    for _ in range(4):
        with HostToDevice() as spy:
            trainer.train_step(on_meta)
        if name == "svd_host_cache":
            staging |= {b.data_ptr() for pair in trainer.factor_cache._ring for b in pair[0]}
        unlisted = [c for c in spy.copies if c.split(" at ")[1] not in PER_STEP]
        assert unlisted == [], f"{name}: host->device copies in a training step: {unlisted}"
    places = {c.split(" at ")[1] for c in spy.copies}
    expected = set(PER_STEP) if name == "svd_host_cache" else \
        {"factor_cache.py:degrade"} if name == "svd_device_cache" else set()
    assert places == expected, spy.copies
    if name == "svd_host_cache":  # two sets, reused: no per-step pinning, bounded memory
        assert len(staging) == 2 * len(trainer.factor_cache.parts), staging


def _sampler_cases() -> list[tuple[str, dict]]:
    return [(f"{name}-{chain['degradation'].__name__}", chain)
            for name in registry("sampler").names() for chain in chains("sampler", name)]


@pytest.mark.parametrize("case", _sampler_cases(), ids=lambda case: case[0])
def test_every_sampler_runs_on_a_stand_in_device(case: tuple[str, dict]) -> None:
    """Each registered sampler, with each degradation it serves, samples on the meta device
    (no sync raised); its first run may copy per-device tables, a second run copies
    nothing."""
    name, chain = case
    built = build_chain(chain, "cpu")
    sampler = built["sampler"]
    if "steps" in sampler.Config.model_fields:  # 6 steps tell as much as T = 1000
        deps = {dep: built[dep] for dep in BY_NAME["sampler"].dependencies}
        sampler = type(sampler)(sampler.config.model_copy(update={"steps": 6}), **deps)
    channels = built["parameterization"].output_channels(3) // 3

    def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (0.5 * torch.tanh(x)).repeat(1, channels, 1, 1)

    x_T = torch.empty(4, 3, 8, 8, device=META)
    sampler.sample(network, x_T, generator=None)
    with HostToDevice() as spy:
        result = sampler.sample(network, x_T, generator=None)
    assert result.sample.device == META
    assert spy.copies == [], f"{name}: host->device copies while sampling: {spy.copies}"


#: Host→device copies a sampling run may make on a warm device, with their reason.
PER_RUN = {"partial.py:sample": "the start images picked from the prior's bank, which stays "
                                "on the host: one copy per batch, not per step"}


@pytest.mark.parametrize("path", ["recipes/quickstart.toml", "studies/recipes/svd_digits16.toml",
                                  "recipes/edm_digits.toml", "recipes/flow_digits.toml"])
def test_sampling_runs_on_a_stand_in_device(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe's whole sampling path (fitted prior, guided denoiser with labels, the real
    network, sampler) on the meta device: a second run copies only what PER_RUN lists."""
    from corediff.engine.trainer import fit_images

    pipeline = corediff.build(corediff.load_recipe(ROOT / path, overrides=[
        "model.preset='tiny'", "diffusion.sampler.steps=4"]))
    images = fit_images(pipeline)
    for component in pipeline.components().values():
        component.fit(images)
    monkeypatch.setattr(torch, "autocast", _Autocast)
    model, spec = pipeline.model.to(META).eval(), pipeline.data_spec
    labels = None if spec.num_classes is None else torch.zeros(4, dtype=torch.long, device=META)
    for _ in range(2):
        with HostToDevice() as spy, torch.no_grad():
            x = pipeline.prior.sample((4, spec.channels, spec.image_size, spec.image_size),
                                      generator=None, device=META)
            result = pipeline.sampler.sample(pipeline.denoiser(labels, model), x,
                                             start=pipeline.prior.start_step(), generator=None)
    assert result.sample.device == META
    unlisted = [c for c in spy.copies if c.split(" at ")[1] not in PER_RUN]
    assert unlisted == [], f"{path}: host->device copies while sampling: {unlisted}"
