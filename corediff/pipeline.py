"""A built recipe: every component wired together, and generation from it.

    pipeline = corediff.load("runs/quickstart")              # weights included
    images = pipeline.sample(16, labels=3, seed=0)             # [16, C, H, W] in [-1, 1]
    degraded, direct, restored = pipeline.restore(images, t=500)

Generation: the prior draws x at its start step; the sampler walks it to step 0 through a
:class:`~corediff.denoiser.Denoiser` (the network, the parameterization, the recipe's guidance
and the labels). Class labels: ``None`` cycles through the classes (0, 1, ..., 0, 1, ...) for
class-conditional data, an int gives every sample that class, a LongTensor [n] gives each its
own; the null label ``num_classes`` asks for unconditional samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from corediff.denoiser import Denoiser
from corediff.errors import ConfigError
from corediff.interfaces import (
    Dataset,
    DataSpec,
    Degradation,
    Guidance,
    LossWeighting,
    Model,
    Parameterization,
    Prior,
    Sampler,
    Schedule,
    TrajectoryStep,
)
from corediff.kinds import DIFFUSION_KINDS


@dataclass
class Generated:
    """What :meth:`Pipeline.generate` returns: images on the CPU (float32, [-1, 1]), the first
    batch's trajectory when asked for, and the network evaluations per sample (``nfe``)."""

    images: Tensor
    trajectory: list[TrajectoryStep] = field(default_factory=list)
    nfe: int = 0


@dataclass
class Pipeline:
    """Every component a recipe names, built and wired together."""

    recipe: Any
    data_spec: DataSpec
    dataset: Dataset | None
    schedule: Schedule
    degradation: Degradation
    parameterization: Parameterization
    loss_weighting: LossWeighting
    sampler: Sampler
    guidance: Guidance
    prior: Prior
    model: Model

    def components(self) -> dict[str, Any]:
        """The non-network components by kind (those with fit/extra_state hooks)."""
        return {kind: getattr(self, kind) for kind in DIFFUSION_KINDS}

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    # -- generation ------------------------------------------------------------------------
    def labels(self, n: int, labels: int | Tensor | None = None) -> Tensor | None:
        """The n samples' class labels on the model's device (None: unconditional data)."""
        num_classes = self.data_spec.num_classes
        if isinstance(labels, Tensor):
            return labels.to(self.device, torch.long)
        if labels is not None and not 0 <= labels < (num_classes or 0):
            classes = f"0..{num_classes - 1}" if num_classes else "none: the data has no classes"
            raise ConfigError(f"[sample] label = {labels} is not a class of the data ({classes})")
        if num_classes is None:
            return None
        if labels is not None:
            return torch.full((n,), labels, dtype=torch.long, device=self.device)
        return torch.arange(n, device=self.device) % num_classes

    def denoiser(self, labels: Tensor | None, model: Any = None) -> Denoiser:
        """The sampler's view of ``model`` (default: the pipeline's) for these labels."""
        network = model if model is not None else self.model
        return Denoiser(
            network, self.parameterization, guidance=self.guidance, labels=labels,
            null_label=self.data_spec.num_classes, labelled=True,
        )

    def with_sampler(self, **changes: Any) -> Pipeline:
        """A copy whose sampler config has ``changes`` (e.g. ``steps=20``), validated."""
        config = self.sampler.config
        config = type(config).model_validate({**config.model_dump(), **changes})
        sampler = type(self.sampler)(
            config, degradation=self.degradation, parameterization=self.parameterization
        )
        return Pipeline(**{**self.__dict__, "sampler": sampler})

    @torch.no_grad()
    def generate(
        self, n: int, *, labels: int | Tensor | None = None, seed: int = 0,
        generator: torch.Generator | None = None, batch_size: int | None = None,
        steps: int | None = None, trajectory: bool = False, model: nn.Module | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> Generated:
        """n samples from the prior through the sampler (see the module docstring).

        ``generator`` (on the model's device) overrides ``seed``; ``steps`` overrides the
        sampler's step count; ``model`` replaces the pipeline's network (e.g. EMA weights);
        ``callback(i, n)`` is called after each sampling step of each batch (a progress bar).
        """
        if steps is not None:
            return self.with_sampler(steps=steps).generate(
                n, labels=labels, seed=seed, generator=generator, batch_size=batch_size,
                trajectory=trajectory, model=model, callback=callback)
        network = model if model is not None else self.model
        device = next(network.parameters()).device
        if generator is None:
            generator = torch.Generator(device).manual_seed(seed)
        all_labels = self.labels(n, labels)
        batch_size = batch_size or self.recipe.sample.batch_size
        spec, start = self.data_spec, self.prior.start_step()
        samples, path, nfe = [], [], 0
        for first in range(0, n, batch_size):
            size = min(batch_size, n - first)
            x = self.prior.sample(
                (size, spec.channels, spec.image_size, spec.image_size),
                generator=generator, device=device,
            )
            y = None if all_labels is None else all_labels[first:first + size]
            result = self.sampler.sample(
                self.denoiser(y, network), x, start=start, generator=generator,
                trajectory=trajectory and first == 0, callback=callback,
            )
            samples.append(result.sample.float().cpu())
            path, nfe = path or result.trajectory, result.nfe
        return Generated(torch.cat(samples), path, nfe)

    def sample(self, n: int, **options: Any) -> Tensor:
        """n images [n, C, H, W] in [-1, 1] on the CPU; options as :meth:`generate`."""
        return self.generate(n, **options).images

    @torch.no_grad()
    def restore(
        self, images: Tensor, t: int | None = None, *, labels: Tensor | None = None,
        seed: int = 0, model: Any = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Conditional restoration (Cold Diffusion's setting): degrade real images
        [B, C, H, W] in [-1, 1] to step ``t`` (default: the prior's start step), then run the
        sampler back. Returns (degraded, direct x̂0, sample) on the model's device. Without
        ``labels`` the network is called unconditionally (the null label). ``model`` may be
        any callable ``model(x_t, t, y)`` (e.g. an oracle in tests)."""
        start = self.prior.start_step() if t is None else t
        if not 1 <= start <= self.degradation.steps:
            raise ConfigError(f"restore: t must be in 1..{self.degradation.steps} (got {start})")
        network = model if model is not None else self.model
        if isinstance(network, nn.Module):
            images = images.to(next(network.parameters()).device)
        x0 = images
        generator = torch.Generator(x0.device).manual_seed(seed)
        t_batch = torch.full((x0.shape[0],), start, dtype=torch.long, device=x0.device)
        noise = self.degradation.sample_noise(x0, generator=generator)
        degraded = self.degradation.degrade(x0, t_batch, noise)
        result = self.sampler.sample(
            self.denoiser(labels, network), degraded, start=start, generator=generator
        )
        return degraded, result.direct, result.sample
