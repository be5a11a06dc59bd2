"""Evaluating a checkpoint: generate N samples, report quality metrics (used by
``corediff eval`` and ``corediff study``).

The stored recipe is rebuilt with the ``--set`` overrides (any compatible sampler and step
count, as for ``corediff sample``), N samples are generated with the EMA weights, and the
metric families of :func:`metric_families` are computed. Which apply is declared by the
components, never guessed from their names:

* the dataset class's ``metrics`` (:class:`corediff.interfaces.Dataset`):
  ``"digits_classifier"`` gives the digits-classifier metric (:mod:`.digits_metric`, report
  key ``digits``); ``"natural_images"`` gives Inception FID/KID/IS/precision-recall against
  real images (:mod:`.inception`, key ``inception``) when torch-fidelity and the weights file
  are present, else the message saying how to get them;
* ``memorization``, for every dataset: distance of each sample to its nearest training image
  (:mod:`.memorization`);
* ``restoration``, when :func:`.restoration.restoration_applies` to the degradation (it is
  not Gaussian): real images degraded to the prior's start step, restored, scored by
  PSNR/SSIM/RMSE (:mod:`.restoration`).

Real images come from the dataset's held-out config (``Dataset.held_out_config``, e.g. the
digits test split) when it declares one, else from the training config, as a seeded random
subset.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from corediff.builder import Pipeline, instantiate
from corediff.engine.loading import LoadedCheckpoint, open_and_load
from corediff.errors import CorediffError
from corediff.evaluation.digits_metric import DigitsMetric
from corediff.evaluation.inception import inception_metrics
from corediff.evaluation.memorization import memorization_metrics
from corediff.evaluation.reference import load_reference, reference_metrics
from corediff.evaluation.restoration import restoration_applies, restoration_metrics
from corediff.interfaces import Dataset
from corediff.registry import registry

#: Real images restored for the restoration metrics (at most; fewer if the set is smaller).
RESTORATION_IMAGES = 256
#: Training images the memorization metric compares samples with (at most: a seeded random
#: subset of larger sets).
MEMORIZATION_IMAGES = 10_000
#: Training images per batch when streaming them for the memorization metric.
MEMORIZATION_BATCH = 512
#: The metric families a dataset class may declare in ``Dataset.metrics``.
DATASET_METRICS = frozenset({"digits_classifier", "natural_images"})


def dataset_class(pipeline: Pipeline) -> type[Dataset]:
    """The dataset plugin class of the pipeline's recipe."""
    return registry("dataset").get(pipeline.recipe.data.type)


def metric_families(pipeline: Pipeline) -> frozenset[str]:
    """Every metric family evaluated for this pipeline: the dataset's declared ``metrics``,
    ``"memorization"``, and ``"restoration"`` when the degradation is not Gaussian."""
    cls = dataset_class(pipeline)
    unknown = set(cls.metrics) - DATASET_METRICS
    if unknown:
        raise CorediffError(
            f"dataset '{pipeline.recipe.data.type}' declares unknown metrics "
            f"{sorted(unknown)}; known: {sorted(DATASET_METRICS)}"
        )
    families = {*cls.metrics, "memorization"}
    if restoration_applies(pipeline.degradation):
        families.add("restoration")
    return frozenset(families)


def held_out_images(pipeline: Pipeline) -> Any:
    """The dataset config of held-out real images (None when the dataset declares none)."""
    return dataset_class(pipeline).held_out_config(pipeline.recipe.data)


def _subset(dataset: Any, n: int, seed: int) -> Subset:
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, pick.tolist())


def real_images(pipeline: Pipeline, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Up to n real images and labels, a seeded random subset of the dataset's held-out
    images (``Dataset.held_out_config``) or, when it declares none, of the recipe's data."""
    data = held_out_images(pipeline) or pipeline.recipe.data
    subset = _subset(instantiate("dataset", data), n, seed)
    images, labels = next(iter(DataLoader(subset, batch_size=len(subset))))
    return images, labels


def training_batches(pipeline: Pipeline, seed: int) -> DataLoader:
    """Batches of the recipe's training images (a seeded subset of MEMORIZATION_IMAGES when
    there are more)."""
    dataset = instantiate("dataset", pipeline.recipe.data)
    if len(dataset) > MEMORIZATION_IMAGES:
        dataset = _subset(dataset, MEMORIZATION_IMAGES, seed)
    return DataLoader(dataset, batch_size=MEMORIZATION_BATCH)


def evaluate(pipeline: Pipeline, model: nn.Module, *, n: int, seed: int,
             reference: Tensor | None = None) -> dict[str, Any]:
    """Generate n samples from ``model`` (on its device) and compute every metric family of
    :func:`metric_families`; with ``reference`` (images [N, C, H, W] in [-1, 1], e.g. from
    :func:`.reference.load_reference`) also the samples scored against it (key
    ``reference``)."""
    cfg, spec = pipeline.recipe.sample, pipeline.data_spec
    families = metric_families(pipeline)
    device = next(model.parameters()).device
    clock = time.perf_counter()
    generated = pipeline.generate(n, labels=cfg.label, seed=seed, model=model)
    samples = generated.images
    report: dict[str, Any] = {"sampling_seconds": round(time.perf_counter() - clock, 2),
                              "nfe": generated.nfe}
    labels = pipeline.labels(n, cfg.label)
    labels = None if labels is None else labels.cpu()
    if "digits_classifier" in families:
        report["digits"] = DigitsMetric(spec.image_size)(samples, labels)
    if "natural_images" in families:
        try:
            real, _ = real_images(pipeline, n, seed)
            report["inception"] = inception_metrics(samples, real, device)
        except CorediffError as exc:
            report["inception"] = {"unavailable": str(exc)}
    held_out = None
    if held_out_images(pipeline) is not None:
        held_out = real_images(pipeline, n, seed)[0]
    report["memorization"] = memorization_metrics(
        samples, (images for images, _ in training_batches(pipeline, seed)), held_out=held_out,
        device=device,
    )
    if reference is not None:
        report["reference"] = reference_metrics(samples, reference, families,
                                                image_size=spec.image_size, device=device)
    if "restoration" in families:
        x0, y = real_images(pipeline, RESTORATION_IMAGES, seed)
        y = y.to(device) if spec.num_classes is not None else None
        report["restoration"] = restoration_metrics(pipeline, model, x0.to(device), labels=y,
                                                    seed=seed)
    return report


def floor_report(pipeline: Pipeline, *, n: int, seed: int) -> dict[str, Any]:
    """Real data scored like generated samples at the same n (a study's floor row): n
    training images (a seeded subset) by the quality metrics — what real data scores on them
    — and, when the dataset declares held-out images, those by the memorization metrics (how
    near real images the model never saw come to the training set)."""
    families = metric_families(pipeline)
    spec = pipeline.data_spec
    dataset = instantiate("dataset", pipeline.recipe.data)
    subset = _subset(dataset, n, seed + 1)  # not the subset memorization compares with
    images, labels = next(iter(DataLoader(subset, batch_size=len(subset))))
    report: dict[str, Any] = {"n": len(subset), "seed": seed}
    if "digits_classifier" in families:
        report["digits"] = DigitsMetric(spec.image_size)(
            images, labels if spec.num_classes is not None else None)
    if "natural_images" in families:
        try:
            real, _ = real_images(pipeline, n, seed)
            report["inception"] = inception_metrics(images, real, "cpu")
        except CorediffError as exc:
            report["inception"] = {"unavailable": str(exc)}
    if held_out_images(pipeline) is not None:
        held_out = real_images(pipeline, n, seed)[0]
        report["memorization"] = memorization_metrics(
            held_out, (x for x, _ in training_batches(pipeline, seed)), held_out=held_out)
    return report


def format_report(report: dict[str, Any], indent: str = "") -> str:
    """Nested metrics as indented ``name: value`` lines."""
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(format_report(value, indent + "  "))
        elif isinstance(value, float):
            lines.append(f"{indent}{key}: {value:.4g}")
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)


def evaluate_checkpoint(
    source: str | Path, overrides: Iterable[str] = (), *, which: str = "last", n: int,
    seed: int, reference: str | Path | None = None,
) -> tuple[LoadedCheckpoint, dict[str, Any]]:
    """Open a checkpoint (or a run directory's ``checkpoints/<which>``) with ``overrides``,
    load its (EMA) weights and evaluate it, against the ``reference`` batch (an ADM-layout
    .npz) too when given: (the opened checkpoint, the report)."""
    overrides = list(overrides)
    loaded, model = open_and_load(source, which, overrides)
    pipeline = loaded.pipeline
    images = None if reference is None else load_reference(
        reference, pipeline.data_spec.channels)
    metrics = evaluate(pipeline, model, n=n, seed=seed, reference=images)
    if reference is not None:
        metrics["reference"] = {"file": str(reference), **metrics["reference"]}
    return loaded, {
        "checkpoint": str(loaded.path), "step": loaded.state["step"], "n": n, "seed": seed,
        "sampler": pipeline.recipe.diffusion.sampler.model_dump(mode="json"),
        "overrides": overrides, **metrics,
    }
