"""Writing generated images: grids, individual PNGs and trajectory strips; and a DDP rank's
share of a grid (:func:`sample_share`).

Generation itself is :meth:`corediff.pipeline.Pipeline.generate` (prior -> sampler through a
guided :class:`~corediff.denoiser.Denoiser`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
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


class _Share(nn.Module):
    """The network on the batches this rank samples (``active``); on the others zeros of the
    network output's shape, so that sampling them only advances the shared generator."""

    def __init__(self, network: nn.Module, channels: int) -> None:
        super().__init__()
        self.network, self.channels, self.active = network, channels, True

    def forward(self, x: Tensor, *args: object) -> Tensor:
        if self.active:
            return self.network(x, *args)
        return x.new_zeros((x.shape[0], self.channels, *x.shape[2:]))


def sample_share(pipeline: Pipeline, n: int, *, labels: int | None, seed: int,
                 model: nn.Module, rank: int, world_size: int,
                 batch_size: int | None = None) -> list[tuple[int, Tensor]]:
    """(batch index, images) of the batches of ``pipeline.sample(n, labels=labels,
    seed=seed, model=model, batch_size=batch_size)`` that are rank ``rank``'s
    (index ≡ rank mod world_size),
    the same images as one process samples: the other batches run with a network that
    returns zeros, which draws the same noise at the cost of the sampler's arithmetic alone
    (samplers draw by shape, never by value)."""
    spec = pipeline.data_spec
    share = _Share(model, pipeline.parameterization.output_channels(spec.channels))
    batches = pipeline.generate_batches(n, labels=labels, seed=seed, model=share,
                                        batch_size=batch_size)
    mine, index = [], 0
    while True:
        share.active = index % world_size == rank  # read while the next batch is sampled
        batch = next(batches, None)
        if batch is None:
            return mine
        if share.active:
            mine.append((index, batch.images))
        index += 1
