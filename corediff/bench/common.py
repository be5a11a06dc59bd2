"""What the checks and measurements of :mod:`corediff.bench` share: settings, the entry
wrapper (ok / failed / skipped, with its seconds), timing and the tiny inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import corediff

#: Dense (no sparsity) tensor-core peaks per GPU model from NVIDIA's datasheets: (what
#: torch.cuda.get_device_name contains, model, bf16 FLOP/s, TF32 FLOP/s), the first match
#: wins (so NVL and PCIe come before the SXM default). GeForce cards: FP32 accumulate.
PEAKS = [
    ("H100 NVL", "H100 NVL", 835e12, 418e12), ("H100 PCIe", "H100 PCIe", 756e12, 378e12),
    ("H100", "H100 SXM", 989e12, 495e12), ("H200 NVL", "H200 NVL", 835e12, 418e12),
    ("H200", "H200 SXM", 989e12, 495e12), ("GH200", "GH200", 989e12, 495e12),
    ("A100", "A100", 312e12, 156e12), ("L40S", "L40S", 362e12, 183e12),
    ("L40", "L40", 181e12, 90.5e12), ("L4", "L4", 121e12, 60e12),
    ("A10G", "A10G", 70e12, 35e12), ("A10", "A10", 125e12, 62.5e12),
    ("RTX 6000 Ada", "RTX 6000 Ada", 364e12, 182e12), ("A6000", "RTX A6000", 155e12, 77e12),
    ("5090", "GeForce RTX 5090", 209.5e12, 104.8e12),
    ("4090", "GeForce RTX 4090", 165e12, 82.6e12), ("4080", "GeForce RTX 4080", 97.5e12, 48.7e12),
    ("3090", "GeForce RTX 3090", 71e12, 35.6e12), ("3080", "GeForce RTX 3080", 59.5e12, 29.8e12),
]
#: (model, preset) measured by a full bench and by benchmarks/throughput.py; --quick: the tiny ones.
MODELS = [("unet", "tiny"), ("unet", "small"), ("unet", "base"), ("dit", "tiny"), ("dit", "small")]
QUICK_MODELS = [("unet", "tiny"), ("dit", "tiny")]
CHECKS = ("cuda", "bf16_autocast", "channels_last", "compile", "ddp", "no_host_sync")
QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.toml"
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


def gpu_peaks(name: str) -> tuple[str, float, float] | None:
    """(model, bf16 peak, TF32 peak) of the GPU named ``name`` (as
    torch.cuda.get_device_name gives it), None for a model not in :data:`PEAKS`."""
    return next(((model, bf16, tf32) for key, model, bf16, tf32 in PEAKS if key in name), None)


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


def tiny_inputs(device: torch.device, batch: int = 2, size: int = 16) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=generator).to(device)
    return x, torch.randint(1, 1000, (batch,), generator=generator).to(device)


