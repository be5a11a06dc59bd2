"""Training throughput and model FLOPs utilisation (MFU) of the unet and dit presets.

    python benchmarks/throughput.py [--image-size 64] [--batch 32] [--steps 5] [--device auto]

For each preset: images/s of a full training step (forward, backward, AdamW), the FLOPs of
one step counted by torch.utils.flop_counter.FlopCounterMode, and MFU = achieved FLOP/s /
peak FLOP/s. The peak comes from a table for known GPUs (dense bf16/fp32 tensor-core peak)
or, elsewhere, from a measured large matmul in the same precision.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import corediff
from corediff.engine.distributed import resolve_device

#: Dense peak FLOP/s by GPU name fragment: (bf16, fp32/tf32).
PEAKS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12),
         "L4": (121e12, 60e12), "4090": (165e12, 82e12)}
MODELS = [("unet", "tiny"), ("unet", "small"), ("unet", "base"), ("dit", "tiny"), ("dit", "small")]


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in PEAKS.items():
            if key in name:
                return (bf16 if dtype == torch.bfloat16 else fp32), f"table ({name})"
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    _sync(device)
    start, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        a @ a
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start), f"measured {n}² matmul"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(kind: str, preset: str, args: argparse.Namespace, device: torch.device,
            dtype: torch.dtype) -> tuple[float, float]:
    """(images/s, FLOPs per training step) for one preset."""
    model = corediff.create("model", kind, preset=preset, in_channels=3, out_channels=3,
                            image_size=args.image_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    t = torch.randint(1, 1000, (args.batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(x, t).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.batch * args.steps / (time.perf_counter() - start), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak, source = peak_flops(device, dtype)
    print(f"device {device}, {dtype}, peak {peak / 1e12:.2f} TFLOP/s ({source}), "
          f"batch {args.batch} at {args.image_size}×{args.image_size}")
    print(f"{'model':<12}{'images/s':>12}{'GFLOP/image':>14}{'TFLOP/s':>10}{'MFU':>8}")
    for kind, preset in MODELS:
        images_per_s, flops = measure(kind, preset, args, device, dtype)
        achieved = flops / args.batch * images_per_s
        print(f"{kind + '/' + preset:<12}{images_per_s:>12.1f}{flops / args.batch / 1e9:>14.2f}"
              f"{achieved / 1e12:>10.3f}{achieved / peak:>8.1%}")


if __name__ == "__main__":
    main()
