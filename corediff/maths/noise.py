"""Seeded random draws that follow the generator's device.

``torch.randn(..., generator=g, device=d)`` fails when g lives on another device than d (a CPU
generator driving CUDA tensors, or the reverse), and so do ``rand``, ``randint`` and
``multinomial``. Every draw in corediff happens on the device of the generator that drives it,
then moves to where it is used, so one seed gives the same numbers whatever device the
tensors end up on. Plugins draw through these functions; ``tests/test_device_discipline.py``
checks statically that no first-party module calls a torch sampler with a generator
otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def generator_device(generator: torch.Generator | None, default: torch.device | str) -> Any:
    """Where a draw driven by ``generator`` happens: its device, or ``default`` without one."""
    return generator.device if generator is not None else default


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise; drawn on the generator's own device, then moved."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform noise on [0, 1); drawn on the generator's own device, then moved."""
    return _draw(torch.rand, shape, generator, device, dtype)


def _draw(sampler: Any, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
          device: torch.device | str, dtype: torch.dtype) -> Tensor:
    source = generator_device(generator, device)
    return sampler(shape, generator=generator, device=source, dtype=dtype).to(device)


def randint(
    low: int, high: int, shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None, device: torch.device | str,
) -> Tensor:
    """Integers uniform on low..high − 1 (int64); drawn on the generator's device, then moved."""
    source = generator_device(generator, device)
    return torch.randint(low, high, shape, generator=generator, device=source).to(device)


def multinomial(
    weights: Tensor, count: int, generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``count`` indices drawn with replacement with probabilities ∝ ``weights`` [K]: the
    weights move to the generator's device for the draw, the indices to ``device`` (default:
    the weights' device)."""
    target = weights.device if device is None else device
    source = generator_device(generator, weights.device)
    drawn = torch.multinomial(weights.to(source), count, replacement=True, generator=generator)
    return drawn.to(target)
