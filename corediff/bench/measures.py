"""The measurements of ``corediff bench``: training images/s and MFU per preset, the SVD share
of a step, data loading, sampling and peak memory. :func:`train_throughput` and
:func:`peak_flops` are what ``benchmarks/throughput.py`` prints."""

from __future__ import annotations

import functools
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import corediff
from corediff.bench.common import QUICKSTART, Settings, gpu_peaks, sync, timed


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): the table for known GPUs (dense bf16 or TF32
    tensor-core peak, :func:`~corediff.bench.common.gpu_peaks`), else a measured large
    matmul in ``dtype``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        known = gpu_peaks(name)
        if known is not None:
            model, bf16, tf32 = known
            return (bf16 if dtype == torch.bfloat16 else tf32), f"table: {model} ({name})"
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


def training_trainer(kind: str, preset: str, *, image_size: int, batch: int,
                     device: torch.device, dtype: torch.dtype, workdir: Path,
                     compile: bool = False) -> Any:
    """A :class:`~corediff.engine.trainer.Trainer` of recipes/quickstart.toml (digits,
    Gaussian degradation, v-prediction, min-SNR weighting, label dropout, EMA; channels_last
    on CUDA) with a ``kind``/``preset`` model at ``image_size``, ``batch``,
    autocast to ``dtype`` (fp32: none) and optionally torch.compile, fitted and ready."""
    from corediff.engine.distributed import Context
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import Trainer

    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    recipe = corediff.load_recipe(QUICKSTART, overrides=[
        f"model={{type='{kind}', preset='{preset}'}}", f"data.image_size={image_size}",
        f"train.batch_size={batch}", f"train.precision='{precision}'",
        f"train.compile={str(compile).lower()}", f"run.device='{device}'"])
    trainer = Trainer(corediff.build(recipe), RunDir(Path(tempfile.mkdtemp(dir=workdir))),
                      Context(device))
    trainer.fit_components()
    trainer.net.train()
    return trainer


def train_throughput(kind: str, preset: str, *, image_size: int, batch: int, steps: int,
                     device: torch.device, dtype: torch.dtype, compile: bool = False,
                     ) -> Throughput:
    """Images/s of the real training step, ``Trainer.train_step`` (degradation, weighting,
    autocast, backward, clipping, AdamW, EMA) on its data path (the loader's batches moved
    to the device) of :func:`training_trainer`, over ``steps`` steps after two warm-up
    steps, and the FLOPs of one step."""
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory(prefix="corediff_train_") as workdir:
        trainer = training_trainer(kind, preset, image_size=image_size, batch=batch,
                                   device=device, dtype=dtype, workdir=Path(workdir),
                                   compile=compile)
        data = trainer.batches()
        trainer.train_step(data)
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(data)
        seconds = timed(lambda: trainer.train_step(data), device, steps)
    return Throughput(batch / seconds, counter.get_total_flops(), batch)


def measure_training(kind: str, preset: str) -> Callable[[Settings], dict[str, Any]]:
    """Images/s, GFLOP/image and MFU of one preset's real training step (peak memory of
    this configuration too on CUDA)."""

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


def measure_svd_sampling(s: Settings) -> dict[str, Any]:
    """Images/s of SVD cold diffusion sampling (studies/recipes/svd_digits16.toml: rank
    schedule, cold sampler, a prior fitted on the data; freshly built weights, fitted
    components): 100 samples, or 8 with quick, in one batch; the factors of every x̂0 are
    decomposed on the device at each step (gram_eigh's batched Jacobi on CUDA)."""
    from corediff.bench.common import SVD_RECIPE
    from corediff.engine.trainer import fit_images

    n = 8 if s.quick else 100
    pipeline = corediff.build(corediff.load_recipe(SVD_RECIPE))
    images = fit_images(pipeline)
    for component in pipeline.components().values():
        component.fit(images)
    pipeline.model.to(s.device).eval()
    pipeline.sample(2, batch_size=2)  # warm-up
    sync(s.device)
    start = time.perf_counter()
    generated = pipeline.generate(n, batch_size=n)
    sync(s.device)
    return {"images_per_s": n / (time.perf_counter() - start), "n": n, "nfe": generated.nfe}


def measure_peak_memory(s: Settings) -> dict[str, Any]:
    """CUDA: torch.cuda.max_memory_allocated since the measurements began; CPU: the maximum
    resident set size of this process (resource.getrusage), whole bench included."""
    if s.cuda:
        return {"cuda_max_allocated_mib": torch.cuda.max_memory_allocated(s.device) / 2**20}
    return {"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

