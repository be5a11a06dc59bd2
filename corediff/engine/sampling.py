"""Generation: prior -> sampler with a (guided) network, and the PNGs written from it.

Classifier-free guidance (Ho & Salimans 2022, eq. 6): with the null label ∅ = num_classes
(the extra row of the model's label table), the guided output is

    guided(x, t) = m(x, t, ∅) + s · (m(x, t, y) − m(x, t, ∅))

evaluated as one batch of 2B. s = 1 is the plain conditional model, s = 0 the unconditional.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.utils import save_image

from corediff.builder import Pipeline
from corediff.errors import ConfigError
from corediff.interfaces import DenoiseFn, TrajectoryStep

#: Columns of a trajectory strip (steps shown) and rows (samples shown).
STRIP_STEPS, STRIP_SAMPLES = 10, 4


def guided(model: nn.Module, y: Tensor | None, scale: float, null_label: int) -> DenoiseFn:
    """The sampler's view ``f(x_t, t)`` of a network ``model(x, t, y)``."""
    if y is None or scale == 1.0:
        return lambda x, t: model(x, t, y)

    def guided_fn(x: Tensor, t: Tensor) -> Tensor:
        null = torch.full_like(y, null_label)
        out_cond, out_null = model(x.repeat(2, 1, 1, 1), t.repeat(2), torch.cat([y, null])).chunk(2)
        return out_null + scale * (out_cond - out_null)

    return guided_fn


def class_labels(
    pipeline: Pipeline, n: int, label: int | None, device: torch.device
) -> Tensor | None:
    """Labels of the n samples: ``label`` for all, or the classes in turn (0, 1, ..., 0, 1...)."""
    num_classes = pipeline.data_spec.num_classes
    if label is not None and not 0 <= label < (num_classes or 0):
        classes = f"0..{num_classes - 1}" if num_classes else "none: the data has no classes"
        raise ConfigError(f"[sample] label = {label} is not a class of the data ({classes})")
    if num_classes is None:
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long, device=device)
    return torch.arange(n, device=device) % num_classes


@torch.no_grad()
def generate(
    pipeline: Pipeline, model: nn.Module, n: int, *, seed: int, batch_size: int,
    guidance_scale: float = 1.0, label: int | None = None, trajectory: bool = False,
) -> tuple[Tensor, list[TrajectoryStep]]:
    """n samples in [-1, 1] (on the CPU) and, if asked, the first batch's trajectory."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    spec = pipeline.data_spec
    labels = class_labels(pipeline, n, label, device)
    start = pipeline.prior.start_step()
    samples, steps = [], []
    for first in range(0, n, batch_size):
        size = min(batch_size, n - first)
        x = pipeline.prior.sample(
            (size, spec.channels, spec.image_size, spec.image_size),
            generator=generator, device=device,
        )
        y = None if labels is None else labels[first:first + size]
        fn = guided(model, y, guidance_scale, null_label=spec.num_classes or 0)
        result = pipeline.sampler.sample(
            fn, x, start=start, generator=generator, trajectory=trajectory and first == 0
        )
        samples.append(result.sample.float().cpu())
        steps = steps or result.trajectory
    return torch.cat(samples), steps


@torch.no_grad()
def restore(
    pipeline: Pipeline, model: nn.Module | DenoiseFn, x0: Tensor, *, start: int, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Conditional restoration (Cold Diffusion's setting): degrade real images x0 to step
    ``start`` and run the sampler back from there. Returns (degraded, direct x̂0, sample);
    the network is called unconditionally."""
    generator = torch.Generator(x0.device).manual_seed(seed)
    t = torch.full((x0.shape[0],), start, dtype=torch.long, device=x0.device)
    noise = pipeline.degradation.sample_noise(x0, generator=generator)
    degraded = pipeline.degradation.degrade(x0, t, noise)
    fn = model if not isinstance(model, nn.Module) else guided(model, None, 1.0, 0)
    result = pipeline.sampler.sample(fn, degraded, start=start, generator=generator)
    return degraded, result.direct, result.sample


def grid_columns(pipeline: Pipeline, n: int) -> int:
    """One column per class when class-conditional (rows show each class once), else square."""
    num_classes = pipeline.data_spec.num_classes
    if num_classes is not None and num_classes <= n:
        return num_classes
    return math.ceil(math.sqrt(n))


def save_grid(images: Tensor, path: Path, nrow: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.clamp(-1, 1), str(path), nrow=nrow, normalize=True, value_range=(-1, 1))


def save_individual(images: Tensor, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
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
