"""Training throughput and model FLOPs utilisation (MFU) of the unet and dit presets.

    python benchmarks/throughput.py [--image-size 64] [--batch 32] [--steps 5] [--device auto]

For each preset: images/s of a full training step (forward, backward, AdamW), the FLOPs of
one step counted by torch.utils.flop_counter.FlopCounterMode, and MFU = achieved FLOP/s /
peak FLOP/s. The peak comes from a table for known GPUs (dense bf16/fp32 tensor-core peak)
or, elsewhere, from a measured large matmul in the same precision. The measurement is
:func:`corediff.bench.train_throughput`, which ``corediff bench`` reports too.
"""

from __future__ import annotations

import argparse

import torch

from corediff.bench import MODELS, peak_flops, train_throughput
from corediff.engine.distributed import resolve_device


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
        result = train_throughput(kind, preset, image_size=args.image_size, batch=args.batch,
                                  steps=args.steps, device=device, dtype=dtype)
        achieved = result.flops_per_image * result.images_per_s
        print(f"{kind + '/' + preset:<12}{result.images_per_s:>12.1f}"
              f"{result.flops_per_image / 1e9:>14.2f}{achieved / 1e12:>10.3f}"
              f"{result.mfu(peak):>8.1%}")


if __name__ == "__main__":
    main()
