"""Seeded random draws that follow the generator's device.

``torch.randn(..., generator=g, device=d)`` fails when g lives on another device than d. Every
draw in corediff happens on the device of the generator that drives it, then moves to where
it is used, so one seed gives the same numbers whatever device the tensors end up on.
"""

from __future__ import annotations

import torch
from torch import Tensor


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise; drawn on the generator's own device, then moved."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
