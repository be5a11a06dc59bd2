"""Writing generated images: grids, individual PNGs and trajectory strips.

Generation itself is :meth:`corediff.pipeline.Pipeline.generate` (prior -> sampler through a
guided :class:`~corediff.denoiser.Denoiser`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from corediff.engine import safe_files
from corediff.engine.checkpoint import atomic_write
from corediff.interfaces import TrajectoryStep
from corediff.pipeline import Pipeline

#: Columns of a trajectory strip (steps shown) and rows (samples shown).
STRIP_STEPS, STRIP_SAMPLES = 10, 4


def grid_columns(pipeline: Pipeline, n: int) -> int:
    """One column per class when class-conditional (rows show each class once), else square."""
    num_classes = pipeline.data_spec.num_classes
    if num_classes is not None and num_classes <= n:
        return num_classes
    return math.ceil(math.sqrt(n))


def save_grid(images: Tensor, path: Path, nrow: int) -> None:
    """A PNG grid of images in [-1, 1], written atomically (never through a link)."""
    safe_files.ensure_dir(path.parent)
    atomic_write(path, lambda tmp: save_image(images.clamp(-1, 1), str(tmp), format="png",
                                              nrow=nrow, normalize=True, value_range=(-1, 1)))


def save_individual(images: Tensor, folder: Path, first: int = 0) -> None:
    """One PNG per image, numbered from ``first`` (``00000.png``, ...)."""
    safe_files.ensure_dir(folder)
    for i, image in enumerate(images, start=first):
        save_grid(image[None], folder / f"{i:05d}.png", nrow=1)


def save_trajectory(steps: list[TrajectoryStep], path: Path) -> None:
    """A strip: for each of the first samples, a row of x_t and below it a row of x̂0, over
    up to STRIP_STEPS evenly spaced sampling steps (step t written in the file's order)."""
    pick = sorted({round(i * (len(steps) - 1) / (STRIP_STEPS - 1)) for i in range(STRIP_STEPS)})
    shown = [steps[i] for i in pick]
    k = min(STRIP_SAMPLES, shown[0].x_t.shape[0])
    rows = []
    for i in range(k):
        rows.append(torch.stack([s.x_t[i].float().cpu() for s in shown]))
        rows.append(torch.stack([s.x0_hat[i].float().cpu() for s in shown]))
    save_grid(torch.cat(rows), path, nrow=len(shown))
