"""Checks and measurements of ``corediff bench``; :func:`train_throughput` and
:func:`peak_flops` are also what ``benchmarks/throughput.py`` prints.

    report = run(Settings(torch.device("cuda"), quick=False))
    print(markdown(report))

A report has ``checks`` (does this machine run corediff's GPU paths?) and ``measurements``
(how fast?). Every entry is a dict whose ``result`` is ``"ok"``, ``"failed: <first line of
the error>"`` or ``"skipped: <reason>"``, with its figures and ``seconds`` (its wall time).
Checks use the tiny U-Net (16×16, batch 2) whatever the settings; measurements use
``Settings.image_size`` and ``batch``. Times are wall-clock means after a warm-up call, the
device synchronised before and after.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import corediff

#: Dense peak FLOP/s by GPU name fragment: (bf16, fp32/tf32).
PEAKS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12),
         "L4": (121e12, 60e12), "4090": (165e12, 82e12)}
#: (model, preset) measured by a full bench and by benchmarks/throughput.py; --quick: the tiny ones.
MODELS = [("unet", "tiny"), ("unet", "small"), ("unet", "base"), ("dit", "tiny"), ("dit", "small")]
QUICK_MODELS = [("unet", "tiny"), ("dit", "tiny")]
CHECKS = ("cuda", "bf16_autocast", "channels_last", "compile", "ddp", "no_host_sync")
QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
SVD_RECIPE = QUICKSTART.parents[1] / "studies" / "recipes" / "svd_digits16.toml"
DDP_RECIPE = """\
[data]
type = "digits"
image_size = 8
[model]
type = "unet"
preset = "tiny"
base_channels = 8
attention_resolutions = []
[diffusion.schedule]
type = "cosine"
steps = 100
[diffusion.degradation]
type = "gaussian"
[diffusion.parameterization]
type = "eps"
[diffusion.loss_weighting]
type = "simple"
[diffusion.sampler]
type = "ddim"
steps = 5
[diffusion.prior]
type = "normal"
[train]
steps = 6
batch_size = 8
log_every = 2
checkpoint_every = 3
warmup_steps = 2
[run]
device = "{device}"
"""


class Skipped(Exception):
    """Raised by a check or measurement that cannot run here; the message is the reason."""


@dataclass(frozen=True)
class Settings:
    """What to run: the device, sizes (None: 64 and 32, or 16 and 4 with ``quick``) and
    which optional checks run where."""

    device: torch.device
    quick: bool = False
    image_size: int | None = None
    batch: int | None = None
    compile: bool = True
    compile_on_cpu: bool = False
    ddp_on_cpu: bool = False
    workdir: Path | None = None  # for temporary files; run() sets a fresh one

    @property
    def size(self) -> int:
        return self.image_size or (16 if self.quick else 64)

    @property
    def batch_size(self) -> int:
        return self.batch or (4 if self.quick else 32)

    @property
    def steps(self) -> int:
        return 2 if self.quick else 5

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype(self) -> torch.dtype:
        """bf16 on CUDA, fp32 elsewhere (the training precision measured)."""
        return torch.bfloat16 if self.cuda else torch.float32


def no_cuda() -> Skipped:
    return Skipped("no CUDA" if not torch.cuda.is_available() else "--device cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Mean seconds per call of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def entry(fn: Callable[[Settings], dict[str, Any] | None], settings: Settings) -> dict[str, Any]:
    """Run one check or measurement: {"result": ..., figures..., "seconds": ...}."""
    start = time.perf_counter()
    try:
        out = {"result": "ok", **(fn(settings) or {})}
    except Skipped as exc:
        out = {"result": f"skipped: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, the bench goes on
        lines = str(exc).strip().splitlines()
        out = {"result": f"failed: {type(exc).__name__}: {lines[0] if lines else ''}".rstrip()}
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def tiny_unet(device: torch.device, size: int = 16) -> torch.nn.Module:
    return corediff.create("model", "unet", preset="tiny", in_channels=3, out_channels=3,
                           image_size=size).to(device)


def _inputs(device: torch.device, batch: int = 2, size: int = 16) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=generator).to(device)
    return x, torch.randint(1, 1000, (batch,), generator=generator).to(device)


# -- checks ----------------------------------------------------------------------------------
def check_cuda(settings: Settings) -> dict[str, Any]:
    """CUDA is available: device name and count, torch and CUDA versions."""
    if not torch.cuda.is_available():
        raise Skipped("no CUDA")
    return {"device": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}


def check_bf16(settings: Settings) -> dict[str, Any]:
    """A bf16-autocast forward and backward of the tiny U-Net: bf16 output, finite gradients."""
    model, (x, t) = tiny_unet(settings.device), _inputs(settings.device)
    with torch.autocast(settings.device.type, dtype=torch.bfloat16):
        out = model(x, t)
    out.float().square().mean().backward()
    if out.dtype != torch.bfloat16:
        raise RuntimeError(f"autocast gave {out.dtype}, not bfloat16")
    if not all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters()):
        raise RuntimeError("a gradient is missing or not finite")
    return {"output_dtype": str(out.dtype)}


def check_channels_last(settings: Settings) -> dict[str, Any]:
    """One training step (forward, backward, AdamW) in channels_last memory format: its loss
    matches the contiguous model's."""
    losses = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = tiny_unet(settings.device).to(memory_format=layout)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, t = _inputs(settings.device)
        for _ in range(2):
            loss = model(x.contiguous(memory_format=layout), t).square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    difference = abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12)
    if not difference < 1e-2:
        raise RuntimeError(f"loss {losses[1]:.6g} in channels_last vs {losses[0]:.6g}")
    return {"relative_loss_difference": difference}


def check_compile(settings: Settings) -> dict[str, Any]:
    """torch.compile of the tiny U-Net's forward gives the eager output (compile time)."""
    if not settings.compile:
        raise Skipped("--no-compile")
    if not settings.cuda and not settings.compile_on_cpu:
        raise no_cuda()
    model, (x, t) = tiny_unet(settings.device).eval(), _inputs(settings.device)
    start = time.perf_counter()
    with torch.no_grad():
        compiled = torch.compile(model)(x, t)
        eager = model(x, t)
    difference = (compiled - eager).abs().max().item()
    if not difference <= 1e-2 * max(1.0, eager.abs().max().item()):
        raise RuntimeError(f"compiled output differs from eager by {difference:.3g}")
    return {"compile_s": time.perf_counter() - start, "max_abs_difference": difference}


def check_ddp(settings: Settings) -> dict[str, Any]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m corediff train``
    of a tiny recipe: N = number of GPUs (NCCL; one GPU: one process, no process group), or 2
    CPU processes under gloo with ``ddp_on_cpu``. The last checkpoint must record N."""
    from corediff.engine import checkpoint

    if settings.cuda:
        n, backend = torch.cuda.device_count(), "nccl"
        backend = backend if n > 1 else "none (one GPU: one process)"
    elif settings.ddp_on_cpu:
        n, backend = 2, "gloo"
    else:
        raise no_cuda()
    folder = Path(tempfile.mkdtemp(prefix="ddp_", dir=settings.workdir))
    recipe = folder / "recipe.toml"
    recipe.write_text(DDP_RECIPE.format(device=settings.device.type))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(n), "-m", "corediff", "train", str(recipe), "--run-dir", str(folder / "run")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600,
    )
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        ours = [line for line in lines if line.startswith("corediff:")]  # corediff's error
        errors = [line for line in lines if "Error" in line and "ChildFailed" not in line]
        first = (ours or errors[-1:] or lines[-1:] or ["no output"])[0]
        raise RuntimeError(f"exit {done.returncode}: {first}")
    state = checkpoint.load_state(folder / "run" / "checkpoints" / "last")
    if state["world_size"] != n or state["step"] != 6:
        raise RuntimeError(f"checkpoint records world size {state['world_size']}, "
                           f"step {state['step']} (expected {n}, 6)")
    return {"processes": n, "backend": backend}


def check_no_host_sync(settings: Settings) -> dict[str, Any]:
    """Trainer.train_step under ``torch.cuda.set_sync_debug_mode("error")`` for the
    quickstart recipe (Gaussian) and studies/recipes/svd_digits16.toml (SVD, factor cache on
    the device), bf16, tiny U-Net: four batches are trained once (filling the cache), then
    replayed with the check on; any host sync raises, reported with its corediff line."""
    if not settings.cuda:
        raise no_cuda()
    import itertools

    from corediff.engine.distributed import Context
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import Trainer

    root = Path(corediff.__file__).resolve().parents[1]
    for name, path in (("gaussian", QUICKSTART), ("svd", SVD_RECIPE)):
        recipe = corediff.load_recipe(path, [
            f"run.device='{settings.device}'", "train.batch_size=16", "model.preset='tiny'",
            "train.precision='bf16'"])
        trainer = Trainer(corediff.build(recipe), RunDir(tempfile.mkdtemp(
            dir=settings.workdir)), Context(settings.device))
        trainer.fit_components()
        trainer.net.train()
        batches = list(itertools.islice(trainer.batches(), 4))
        replay = iter(batches + batches)
        for _ in batches:
            trainer.train_step(replay)
        sync(settings.device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in batches:
                trainer.train_step(replay)
        except RuntimeError as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if Path(f.filename).resolve().parts[len(root.parts):][:1] in
                      (("corediff",), ("corediff_plugins",))]
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            raise RuntimeError(f"{name}: host sync at {where} "
                               f"({str(exc).splitlines()[0]})") from exc
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return {"recipes": "gaussian, svd", "steps_checked": 8}


# -- measurements ----------------------------------------------------------------------------
def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): the table for known GPUs (dense bf16/fp32
    tensor-core peak), else a measured large matmul in ``dtype``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in PEAKS.items():
            if key in name:
                return (bf16 if dtype == torch.bfloat16 else fp32), f"table ({name})"
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ a, device, 10), f"measured {n}² matmul"


_peak_flops = functools.cache(peak_flops)  # measured once per bench


@dataclass(frozen=True)
class Throughput:
    """One preset's training throughput."""

    images_per_s: float
    flops_per_step: float  # counted by torch.utils.flop_counter.FlopCounterMode
    batch: int

    @property
    def flops_per_image(self) -> float:
        return self.flops_per_step / self.batch

    def mfu(self, peak: float) -> float:
        """Model FLOPs utilisation: achieved FLOP/s / peak FLOP/s."""
        return self.flops_per_image * self.images_per_s / peak


def train_throughput(kind: str, preset: str, *, image_size: int, batch: int, steps: int,
                     device: torch.device, dtype: torch.dtype) -> Throughput:
    """Images/s of a full training step (forward, backward, AdamW; autocast to ``dtype``
    unless fp32) of a 3-channel model preset over ``steps`` steps after two warm-up steps,
    and the step's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    model = corediff.create("model", kind, preset=preset, in_channels=3, out_channels=3,
                            image_size=image_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    t = torch.randint(1, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(x, t).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    step()
    seconds = timed(step, device, steps)
    return Throughput(batch / seconds, counter.get_total_flops(), batch)


def measure_training(kind: str, preset: str) -> Callable[[Settings], dict[str, Any]]:
    """Images/s, GFLOP/image and MFU of one preset (peak memory too on CUDA)."""

    def measure(s: Settings) -> dict[str, Any]:
        if s.cuda:
            torch.cuda.reset_peak_memory_stats(s.device)
        result = train_throughput(kind, preset, image_size=s.size, batch=s.batch_size,
                                  steps=s.steps, device=s.device, dtype=s.dtype)
        peak, source = _peak_flops(s.device, s.dtype)
        out = {"images_per_s": result.images_per_s, "gflop_per_image":
               result.flops_per_image / 1e9, "mfu": result.mfu(peak), "peak_source": source}
        if s.cuda:
            out["peak_memory_mib"] = torch.cuda.max_memory_allocated(s.device) / 2**20
        return out

    return measure


def measure_svd_share(s: Settings) -> dict[str, Any]:
    """The SVD share of a training step: time of D(x0, t) by the ``svd`` degradation
    (``rank_linear`` schedule, T = image size) over the time of the whole step (D, the U-Net
    forward and backward, AdamW), without and with a warm FactorCache (decompose once, then
    rebuild x_t from the stored factors)."""
    from corediff.engine.factor_cache import FactorCache

    device, size, batch = s.device, s.size, s.batch_size
    svd = corediff.create("degradation", "svd",
                          schedule=corediff.create("schedule", "rank_linear", steps=size))
    model = corediff.create("model", "unet", preset="tiny" if s.quick else "base",
                            in_channels=3, out_channels=3, image_size=size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    t = torch.randint(1, size + 1, (batch,), device=device)
    cache, index = FactorCache(svd, batch, device=device), torch.arange(batch)

    def step(degrade: Callable[[], torch.Tensor]) -> None:
        x_t = degrade()
        with torch.autocast(device.type, dtype=s.dtype, enabled=s.cuda):
            output = model(x_t, t)
        (x_t + output.float() - x0).square().mean().backward()  # the residual objective
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    out = {}
    for name, degrade in (("", lambda: svd.degrade(x0, t)),
                          ("cached_", lambda: cache.degrade(x0, index, t))):
        d = timed(degrade, device, s.steps)
        whole = timed(lambda degrade=degrade: step(degrade), device, s.steps)
        out |= {f"{name}degrade_ms": d * 1e3, f"{name}step_ms": whole * 1e3,
                f"{name}share": d / whole}
    return out


def write_jpegs(folder: Path, count: int, side: int) -> None:
    """``count`` random ``side``² crops of scikit-learn's two sample photos as JPEGs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos, rng = load_sample_images().images, np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        side_i = min(side, *photo.shape[:2])
        y, x = (int(rng.integers(0, n - side_i + 1)) for n in photo.shape[:2])
        sub = folder / ("china", "flower")[i % 2]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[y:y + side_i, x:x + side_i]).save(sub / f"{i}.jpg", quality=90)


def measure_data_loader(s: Settings) -> dict[str, Any]:
    """Images/s of one epoch of the ``image_folder`` dataset over JPEGs written here (crops of
    side 8× the image size, at most 427), through a DataLoader as the trainer builds it
    (shuffled, drop_last, pinned on CUDA; 4 persistent workers prefetching 2 batches each as
    svd_afhq.toml, none with quick), batches moved to the device; worker start-up included."""
    from torch.utils.data import DataLoader

    folder, side = Path(tempfile.mkdtemp(prefix="jpegs_", dir=s.workdir)), min(427, 8 * s.size)
    write_jpegs(folder, max(32 if s.quick else 512, 2 * s.batch_size), side)
    dataset = corediff.create("dataset", "image_folder", root=str(folder), image_size=s.size)
    workers = 0 if s.quick else min(4, os.cpu_count() or 1)
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
    loader = DataLoader(dataset, batch_size=s.batch_size, shuffle=True, num_workers=workers,
                        pin_memory=s.cuda, drop_last=True, **extra)
    images, start = 0, time.perf_counter()
    for x, _ in loader:
        x = x.to(s.device, non_blocking=True)
        images += x.shape[0]
    sync(s.device)
    return {"images_per_s": images / (time.perf_counter() - start), "images": images,
            "workers": workers, "jpeg_side": side}


def measure_sampling(s: Settings) -> dict[str, Any]:
    """Images/s of ``Pipeline.generate`` for recipes/quickstart.toml (16×16 digits, tiny
    U-Net, DDIM with classifier-free guidance), freshly built weights: 100 samples at the
    recipe's 50 steps, or 8 at 5 steps with quick; in fp32 and, on CUDA, with
    ``sample.precision`` "tf32" and "bf16"."""
    n, steps = (8, 5) if s.quick else (100, 50)
    pipeline = corediff.build(corediff.load_recipe(QUICKSTART))
    pipeline.model.to(s.device).eval()
    result: dict[str, Any] = {"n": n, "steps": steps}
    for precision in ("fp32", "tf32", "bf16") if s.device.type == "cuda" else ("fp32",):
        pipeline.sample(2, steps=2, precision=precision)  # warm-up
        sync(s.device)
        start = time.perf_counter()
        generated = pipeline.generate(n, steps=steps, batch_size=n, precision=precision)
        sync(s.device)
        suffix = "" if precision == "fp32" else f"_{precision}"
        result[f"images_per_s{suffix}"] = n / (time.perf_counter() - start)
        result["nfe"] = generated.nfe
    return result


def measure_peak_memory(s: Settings) -> dict[str, Any]:
    """CUDA: torch.cuda.max_memory_allocated since the measurements began; CPU: the maximum
    resident set size of this process (resource.getrusage), whole bench included."""
    if s.cuda:
        return {"cuda_max_allocated_mib": torch.cuda.max_memory_allocated(s.device) / 2**20}
    return {"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(settings: Settings, progress: Callable[[str, dict[str, Any]], None] | None = None,
        ) -> dict[str, Any]:
    """Every check, then every measurement, temporary files in a folder removed at the end;
    ``progress(name, entry)`` after each."""
    checks = dict(zip(CHECKS, (check_cuda, check_bf16, check_channels_last, check_compile,
                               check_ddp, check_no_host_sync), strict=True))
    models = QUICK_MODELS if settings.quick else MODELS
    measurements = {f"train_{k}_{p}": measure_training(k, p) for k, p in models}
    measurements |= {"svd_share": measure_svd_share, "data_loader": measure_data_loader,
                     "sampling": measure_sampling, "peak_memory": measure_peak_memory}
    report: dict[str, Any] = {
        "settings": {"device": str(settings.device), "quick": settings.quick,
                     "image_size": settings.size, "batch": settings.batch_size,
                     "timed_steps": settings.steps, "dtype": str(settings.dtype)},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "platform": platform.platform(), "cpus": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "corediff":
                        corediff.__version__},
        "checks": {}, "measurements": {},
    }
    with tempfile.TemporaryDirectory(prefix="corediff_bench_") as workdir:
        settings = replace(settings, workdir=Path(workdir))
        for group, table in (("checks", checks), ("measurements", measurements)):
            if group == "measurements" and settings.cuda:
                torch.cuda.reset_peak_memory_stats(settings.device)
            for name, fn in table.items():
                report[group][name] = entry(fn, settings)
                if progress is not None:
                    progress(name, report[group][name])
    return report


def failed(report: dict[str, Any]) -> list[str]:
    """Names of the checks and measurements that failed."""
    return [name for group in ("checks", "measurements") for name, e in report[group].items()
            if e["result"].startswith("failed")]


def _value(key: str, value: Any) -> str:
    if isinstance(value, float) and (key == "mfu" or key.endswith("share")):
        return f"{value:.2%}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def figures(e: dict[str, Any]) -> str:
    """An entry's figures as one line: ``name value, ...`` (MFU and shares in %)."""
    return ", ".join(f"{k} {_value(k, v)}" for k, v in e.items()
                     if k not in ("result", "seconds"))


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a heading with the settings, a table of the checks and one
    of the measurements."""
    s = report["settings"]
    lines = [f"# corediff bench: {s['device']}{', quick' if s['quick'] else ''} "
             f"({s['image_size']}×{s['image_size']}, batch {s['batch']}, {s['dtype']}, "
             f"torch {report['environment']['torch']})"]
    for group in ("checks", "measurements"):
        lines += ["", f"| {group[:-1]} | result | figures | seconds |", "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {e['result']} | {figures(e)} | {e['seconds']} |"
                  for name, e in report[group].items()]
    return "\n".join(lines) + "\n"
