"""``corediff sample RUN_DIR_OR_CHECKPOINT``: generate images (optionally a trajectory
strip), or with ``--restore`` degrade real images and sample them back."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from corediff.engine.images import load_images
from corediff.engine.loading import open_and_load
from corediff.engine.sampling import grid_columns, save_grid, save_individual, save_trajectory
from corediff.errors import ConfigError
from corediff.paths import check_file, check_folder
from corediff.pipeline import Pipeline


def main(args: argparse.Namespace) -> int:
    loaded, model = open_and_load(Path(args.source).expanduser(), args.checkpoint,
                                  args.overrides)
    pipeline = loaded.pipeline
    cfg = pipeline.recipe.sample
    n = args.n if args.n is not None else cfg.n
    seed = args.seed if args.seed is not None else cfg.seed
    if args.restore:
        return _restore(pipeline, model, args, loaded.run_root,
                        n=n, seed=seed)
    fmt = getattr(args, "format", "png")
    npz = fmt in ("npz", "pt")
    if npz and (args.individual or args.trajectory):
        raise ConfigError(f"--format {fmt} writes one array file; it cannot be combined with "
                          "--individual or --trajectory")
    stem = f"{pipeline.recipe.diffusion.sampler.type}_seed{seed}"
    out = Path(args.out) if args.out else loaded.run_root / "generated" / (
        stem if args.individual else f"{stem}.{fmt}")
    flag = "--out" if args.out else "the output"
    if args.individual:
        check_folder(flag, out)
    else:
        check_file(flag, out)
    batches = -(-n // cfg.batch_size)
    total = batches * pipeline.sampler.nfe(pipeline.prior.start_step())
    kept, steps, written = [], [], 0
    with tqdm(total=total, unit="nfe", desc="sampling", dynamic_ncols=True) as bar:
        for batch in pipeline.generate_batches(
                n, labels=cfg.label, seed=seed, model=model, trajectory=args.trajectory,
                callback=lambda i, count: bar.update(pipeline.sampler.evaluations_per_step)):
            steps = steps or batch.trajectory
            if args.individual:  # written as they come: memory bounded by one batch
                save_individual(batch.images, out, first=written)
            else:
                kept.append(batch.images)
            written += len(batch.images)
    if fmt == "npz":
        save_npz(torch.cat(kept), pipeline.labels(n, cfg.label), out)
    elif fmt == "pt":
        save_pt(torch.cat(kept), pipeline.labels(n, cfg.label), out)
    elif not args.individual:
        save_grid(torch.cat(kept), out, nrow=grid_columns(pipeline, n))
    print(f"samples: {out}")
    if args.trajectory:
        strip = out.with_name(f"{out.stem}_trajectory.png")
        save_trajectory(steps, strip)
        print(f"trajectory (rows: x_t then x̂0 per sample; columns: steps T -> 0): {strip}")
    return 0


def save_npz(images: torch.Tensor, labels: torch.Tensor | None, out: Path) -> None:
    """Samples in the layout of the ADM evaluation suite (guided-diffusion's
    ``image_sample.py`` and ``evaluations/evaluator.py``): ``arr_0`` uint8 [N, H, W, C]
    (x ↦ round((x + 1)·127.5), clipped to 0..255), plus ``arr_1`` int64 labels [N] when the
    model is class-conditional; written atomically."""
    import numpy as np

    from corediff.engine import safe_files
    from corediff.engine.checkpoint import atomic_write

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arrays = [pixels.permute(0, 2, 3, 1).contiguous().numpy()]
    if labels is not None:
        arrays.append(labels.cpu().to(torch.int64).numpy())
    safe_files.ensure_dir(out.parent)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez adds no suffix to it
            np.savez(handle, *arrays)

    atomic_write(out, write)


def save_pt(images: torch.Tensor, labels: torch.Tensor | None, out: Path) -> None:
    """Samples as a torch file of plain tensors (``torch.load(out, weights_only=True)``
    reads it): ``{"images": float32 [N, C, H, W] in [-1, 1]}``, plus ``"labels"`` int64 [N]
    when the model is class-conditional; written atomically."""
    from corediff.engine import safe_files
    from corediff.engine.checkpoint import atomic_write

    data = {"images": images.detach().float().cpu().contiguous()}
    if labels is not None:
        data["labels"] = labels.cpu().to(torch.int64)
    safe_files.ensure_dir(out.parent)
    atomic_write(out, lambda tmp: torch.save(data, tmp))


def _restore(pipeline: Pipeline, model: torch.nn.Module, args: argparse.Namespace,
             run_root: Path, *, n: int, seed: int) -> int:
    """Conditional restoration: degrade real images to a step, then run the sampler back."""
    x0 = load_images(Path(args.restore).expanduser(), pipeline.data_spec, n, flag="--restore")
    start = args.restore_step if args.restore_step is not None else pipeline.prior.start_step()
    if not 1 <= start <= pipeline.degradation.steps:
        raise ConfigError(
            f"--restore-step must be in 1..{pipeline.degradation.steps} (got {start})"
        )
    out = Path(args.out) if args.out else run_root / "generated" / (
        f"restored_{pipeline.recipe.diffusion.sampler.type}_t{start}.png")
    check_file("--out" if args.out else "the output", out)
    restored = pipeline.restore(x0, start, seed=seed, model=model)
    rows = torch.stack([x0, *(image.cpu() for image in restored)], 1).flatten(0, 1)
    save_grid(rows, out, nrow=4)
    print(f"restoration (columns: original, D(x0, {start}), direct x̂0, sampled): {out}")
    return 0
