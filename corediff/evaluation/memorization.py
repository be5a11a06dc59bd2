"""Memorization: how close generated samples come to the images the model was trained on.

For each sample (clamped to [-1, 1]), the distance to its nearest training image, as an
RMSE in [-1, 1] units (the Euclidean distance of the flattened images divided by
sqrt(C·H·W), so it reads like :func:`corediff.evaluation.restoration.rmse`). Computed in
float64 with ``torch.cdist`` between all samples at once and one batch of training images at
a time, keeping a running minimum, so any number of training images fits in memory.
Reported:

* ``mean_distance``: mean over samples of the nearest-training-image RMSE;
* ``min_distance``: the smallest of them (0 for an exact copy);
* ``fraction_close``: share of samples nearer than ``threshold`` to some training image
  (default :data:`THRESHOLD` = 0.05, a PSNR of 32 dB: a near copy);
* ``held_out_mean_distance`` (when held-out real images are given): the same mean for them,
  the distance a model that generalises, rather than copies, should come near;
* ``copy_share`` (with held-out images): share of samples nearer to a training image than
  ``1 − COPY_QUANTILE`` of the held-out real images are to theirs (below the held-out
  distances' :data:`COPY_QUANTILE` quantile, reported as ``copy_threshold``). Real held-out
  images score :data:`COPY_QUANTILE` by construction; a model that copies its training images
  scores near 1. A study flags samples that are mostly copies (:data:`MOSTLY_COPIES`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

#: Nearest-neighbour RMSE below which a sample counts as a near copy of a training image.
THRESHOLD = 0.05
#: Quantile of the held-out images' nearest-training distances below which a sample is a copy.
COPY_QUANTILE = 0.05
#: ``copy_share`` above which a model's samples are mostly copies of its training images.
MOSTLY_COPIES = 0.5
#: Training images per ``torch.cdist`` call when the reference is one tensor.
REFERENCE_BATCH = 1024


def nearest_distances(
    samples: Tensor, reference: Tensor | Iterable[Tensor], *, device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """(RMSE [N] to the nearest reference image, its index [N]) for samples [N, ...] and
    reference images [M, ...] of the same shape (a tensor, or an iterable of batches of
    them, e.g. from a DataLoader); float64 on the CPU."""
    queries = samples.flatten(1).to(device, torch.float64)
    batches = reference.split(REFERENCE_BATCH) if isinstance(reference, Tensor) else reference
    best = torch.full((queries.shape[0],), math.inf, dtype=torch.float64, device=device)
    index = torch.full((queries.shape[0],), -1, dtype=torch.long, device=device)
    offset = 0
    for batch in batches:
        keys = batch.flatten(1).to(device, torch.float64)
        if keys.shape[1] != queries.shape[1]:
            raise ValueError(f"reference images have {keys.shape[1]} values, samples "
                             f"{queries.shape[1]}")
        distance, nearest = torch.cdist(queries, keys).min(1)
        closer = distance < best
        best = torch.where(closer, distance, best)
        index = torch.where(closer, nearest + offset, index)
        offset += keys.shape[0]
    if offset == 0:
        raise ValueError("no reference images to compare the samples with")
    return (best / math.sqrt(queries.shape[1])).cpu(), index.cpu()


def memorization_metrics(
    samples: Tensor, training: Tensor | Iterable[Tensor], *, held_out: Tensor | None = None,
    threshold: float = THRESHOLD, device: torch.device | str = "cpu",
) -> dict[str, float | int]:
    """The metrics of the module docstring for samples [N, C, H, W] (clamped to [-1, 1], as
    images would be saved) against the training images (a tensor or an iterable of batches),
    with optional held-out images (both sets compared in one pass over the training images)."""
    samples = samples.clamp(-1, 1)
    queries = samples if held_out is None else torch.cat([samples, held_out.to(samples)])
    distances, _ = nearest_distances(queries, training, device=device)
    distances, held_out_distances = distances[:len(samples)], distances[len(samples):]
    metrics: dict[str, float | int] = {
        "mean_distance": float(distances.mean()),
        "min_distance": float(distances.min()),
        "fraction_close": float((distances < threshold).double().mean()),
        "threshold": threshold,
    }
    if held_out is not None:
        metrics["held_out_mean_distance"] = float(held_out_distances.mean())
        below = torch.quantile(held_out_distances, COPY_QUANTILE)
        metrics["copy_share"] = float((distances < below).double().mean())
        metrics["copy_threshold"] = float(below)
    return metrics
