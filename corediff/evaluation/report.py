"""Evaluating a checkpoint: generate N samples, report quality metrics (used by
``corediff eval`` and ``python -m corediff.evaluation.results``).

The stored recipe is rebuilt with the ``--set`` overrides (any compatible sampler and step
count, as for ``corediff sample``), N samples are generated with the EMA weights, and:

* digits runs get the digits-classifier metric (:mod:`.digits_metric`);
* other image runs get Inception FID/KID/IS/precision-recall against the dataset's images when
  the weights file is present (else the message saying how to get it);
* cold degradations (no "gaussian" capability) also get restoration metrics: real images
  degraded to the prior's start step, restored, scored by PSNR/SSIM/RMSE (:mod:`.restoration`).
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
from corediff.engine.loading import LoadedCheckpoint, load_model, open_checkpoint
from corediff.errors import CorediffError
from corediff.evaluation.digits_metric import DigitsMetric
from corediff.evaluation.inception import inception_metrics
from corediff.evaluation.restoration import restoration_metrics

#: Real images restored for the restoration metrics (at most; fewer if the set is smaller).
RESTORATION_IMAGES = 256


def real_images(pipeline: Pipeline, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Up to n real images and labels: the held-out split for digits, else a seeded random
    subset of the recipe's dataset."""
    data = pipeline.recipe.data
    if data.type == "digits":
        data = data.model_copy(update={"split": "test"})
    dataset = instantiate("dataset", data)
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    images, labels = next(iter(DataLoader(Subset(dataset, pick.tolist()), batch_size=len(pick))))
    return images, labels


def evaluate(pipeline: Pipeline, model: nn.Module, *, n: int, seed: int) -> dict[str, Any]:
    """Generate n samples from ``model`` (on its device) and compute every metric that applies."""
    cfg, spec = pipeline.recipe.sample, pipeline.data_spec
    device = next(model.parameters()).device
    clock = time.perf_counter()
    generated = pipeline.generate(n, labels=cfg.label, seed=seed, model=model)
    samples = generated.images
    report: dict[str, Any] = {"sampling_seconds": round(time.perf_counter() - clock, 2),
                              "nfe": generated.nfe}
    labels = pipeline.labels(n, cfg.label)
    labels = None if labels is None else labels.cpu()
    if pipeline.recipe.data.type == "digits":
        report["digits"] = DigitsMetric(spec.image_size)(samples, labels)
    else:
        try:
            real, _ = real_images(pipeline, n, seed)
            report["inception"] = inception_metrics(samples, real, device)
        except CorediffError as exc:
            report["inception"] = {"unavailable": str(exc)}
    if "gaussian" not in pipeline.degradation.provides:
        x0, y = real_images(pipeline, RESTORATION_IMAGES, seed)
        y = y.to(device) if spec.num_classes is not None else None
        report["restoration"] = restoration_metrics(pipeline, model, x0.to(device), labels=y,
                                                    seed=seed)
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
    seed: int,
) -> tuple[LoadedCheckpoint, dict[str, Any]]:
    """Open a checkpoint (or a run directory's ``checkpoints/<which>``) with ``overrides``,
    load its (EMA) weights and evaluate it: (the opened checkpoint, the report)."""
    overrides = list(overrides)
    loaded = open_checkpoint(source, which, overrides)
    pipeline = loaded.pipeline
    model = load_model(loaded, pipeline.recipe.sample.use_ema)
    metrics = evaluate(pipeline, model, n=n, seed=seed)
    return loaded, {
        "checkpoint": str(loaded.path), "step": loaded.state["step"], "n": n, "seed": seed,
        "sampler": pipeline.recipe.diffusion.sampler.model_dump(mode="json"),
        "overrides": overrides, **metrics,
    }
