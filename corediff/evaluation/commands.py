"""``corediff eval RUN_DIR_OR_CHECKPOINT``: generate N samples, report quality metrics.

The stored recipe is rebuilt with the ``--set`` overrides (any compatible sampler and step
count, as for ``corediff sample``), N samples are generated with the EMA weights, and:

* digits runs get the digits-classifier metric (:mod:`.digits_metric`);
* other image runs get Inception FID/KID/IS/precision-recall against the dataset's images when
  the weights file is present (else the message saying how to get it);
* cold degradations (no "gaussian" capability) also get restoration metrics: real images
  degraded to the prior's start step, restored, scored by PSNR/SSIM/RMSE (:mod:`.restoration`).

The report is printed and written as JSON (``<run dir>/eval.json`` or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from corediff.builder import Pipeline, instantiate
from corediff.engine import checkpoint
from corediff.engine.commands import checkpoint_dir, load_pipeline
from corediff.engine.distributed import resolve_device
from corediff.engine.sampling import class_labels, generate, guided
from corediff.errors import ConfigError, CorediffError
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
    samples, _ = generate(pipeline, model, n, seed=seed, batch_size=cfg.batch_size,
                          guidance_scale=cfg.guidance_scale, label=cfg.label)
    report: dict[str, Any] = {"sampling_seconds": round(time.perf_counter() - clock, 2)}
    labels = class_labels(pipeline, n, cfg.label, torch.device("cpu"))
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
        fn = guided(model, y, cfg.guidance_scale, null_label=spec.num_classes or 0)
        report["restoration"] = restoration_metrics(pipeline, fn, x0.to(device), seed=seed)
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
    path: Path, overrides: list[str], *, n: int, seed: int
) -> tuple[Pipeline, dict[str, Any]]:
    """Rebuild a checkpoint with ``overrides``, load its (EMA) weights and evaluate it."""
    pipeline = load_pipeline(path, overrides)
    state = checkpoint.load_state(path)
    model = pipeline.model
    checkpoint.load_weights(model, path, "ema" if pipeline.recipe.sample.use_ema else "model")
    model.to(resolve_device(pipeline.recipe.run.device)).eval()
    metrics = evaluate(pipeline, model, n=n, seed=seed)
    return pipeline, {
        "checkpoint": str(path), "step": state["step"], "n": n, "seed": seed,
        "sampler": pipeline.recipe.diffusion.sampler.model_dump(mode="json"),
        "network_calls": len(pipeline.sampler.timesteps(pipeline.prior.start_step())),
        "overrides": list(overrides), **metrics,
    }


def eval_command(args: argparse.Namespace) -> int:
    if args.n < 2:
        raise ConfigError(f"--n must be at least 2 for distribution metrics (got {args.n})")
    path = checkpoint_dir(Path(args.source).expanduser(), args.checkpoint)
    _, report = evaluate_checkpoint(path, args.overrides, n=args.n, seed=args.seed)
    run_root = path.parent.parent if path.parent.name == "checkpoints" else path
    out = Path(args.out) if args.out else run_root / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(format_report(report))
    print(f"metrics: {out}")
    return 0
