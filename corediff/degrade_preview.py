"""Previews of a degradation: a strip of D(x0, t) across t, and the SVD error-versus-rank table.

Used by ``corediff degrade RECIPE --image PATH``; only the :class:`Degradation` interface is
used (the error table is duck-typed on an ``error_curve(images)`` method).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from corediff.interfaces import Degradation


def strip_steps(degradation: Degradation, n: int = 8) -> list[int] | list[float]:
    """n times evenly spaced over 0..t_max: steps of a discrete degradation (fewer when
    T + 1 < n), real times of a continuous one."""
    t_max = degradation.t_max
    times = torch.linspace(0, t_max, n, dtype=torch.float64)
    if not isinstance(t_max, int):
        return times.tolist()
    return sorted(set(times.round().long().tolist()))


@torch.no_grad()
def degradation_strip(degradation: Degradation, image: Tensor, n: int = 8) -> Tensor:
    """A row [C, H, k·W] of D(image, t) for k ≤ n times t evenly spaced over 0..t_max."""
    t = torch.tensor(strip_steps(degradation, n), device=image.device)
    t = t.double() if t.is_floating_point() else t
    frames = degradation.degrade(image[None].expand(len(t), *image.shape), t)
    return torch.cat(list(frames.clamp(-1, 1)), dim=-1)


def save_strip(degradation: Degradation, image: Tensor, path: str | Path, n: int = 8) -> Path:
    """Write :func:`degradation_strip` of an image in [-1, 1] as an 8-bit PNG."""
    strip = degradation_strip(degradation, image, n)
    pixels = ((strip + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()
    if pixels.shape[0] not in (1, 3, 4):
        raise ValueError(f"cannot write an image with {pixels.shape[0]} channels as PNG")
    array = pixels.permute(1, 2, 0).numpy()
    path = Path(path)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


@torch.no_grad()
def svd_error_table(degradation: Degradation, image: Tensor) -> list[tuple[int, float]] | None:
    """Rows (rank k, mean |x − D_k(x)|) for k = 0..min(H, W), or None when the degradation
    has no ``error_curve``."""
    error_curve = getattr(degradation, "error_curve", None)
    if error_curve is None:
        return None
    curve = error_curve(image[None])
    return [(k, float(error)) for k, error in enumerate(curve.tolist())]
