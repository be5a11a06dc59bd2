"""The ``run``, ``train``, ``sample`` and ``degrade`` commands (argparse in corediff.cli).

OpenMP threads sleep rather than spin while waiting (OMP_WAIT_POLICY=PASSIVE unless set):
on a CPU shared with other work, spinning threads made small-model steps ~25× slower.
This must be set before torch is first imported, hence at the top of this module.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tomllib
from pathlib import Path

import torch

from corediff.builder import DataSpec, Pipeline, build, instantiate
from corediff.engine import checkpoint, distributed
from corediff.engine.rundir import RunDir
from corediff.engine.sampling import (
    generate,
    grid_columns,
    restore,
    save_grid,
    save_individual,
    save_trajectory,
)
from corediff.engine.trainer import run_training
from corediff.errors import ConfigError
from corediff.recipe import Recipe, apply_overrides, load_recipe, parse_recipe


def _run_dir(recipe: Recipe, args: argparse.Namespace) -> RunDir:
    return RunDir(args.run_dir or Path(recipe.run.root) / recipe.run.name)


def _train(args: argparse.Namespace, *, then_sample: bool) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    run = _run_dir(recipe, args)
    context = distributed.setup(recipe.run.device)
    try:
        trainer = run_training(recipe, run, context, resume=args.resume)
        if context.is_main:
            if then_sample:
                trainer.sample_grid(run.sample_grid())
                print(f"samples: {run.sample_grid()}")
            print(f"checkpoint: {run.checkpoint('last')}")
    finally:
        distributed.teardown(context)
    return 0


def run_command(args: argparse.Namespace) -> int:
    return _train(args, then_sample=True)


def train_command(args: argparse.Namespace) -> int:
    return _train(args, then_sample=False)


# -- sample -------------------------------------------------------------------------------------
def checkpoint_dir(source: Path, which: str) -> Path:
    """A checkpoint directory itself, or a run directory's ``checkpoints/<which>``."""
    for candidate in (source, RunDir(source).checkpoint(which)):
        found = checkpoint.find(candidate)
        if found is not None:
            return found
    raise ConfigError(
        f"'{source}' is neither a run directory with checkpoints/{which} nor a checkpoint "
        "directory (one holding state.json)"
    )


def load_pipeline(path: Path, overrides: list[str]) -> Pipeline:
    """Rebuild a checkpoint's pipeline from its stored recipe (with ``overrides`` applied)
    and DataSpec, restoring the fitted state of components whose type is unchanged."""
    stored = tomllib.loads((path / "recipe.toml").read_text(encoding="utf-8"))
    recipe = parse_recipe(apply_overrides(stored, overrides), source=str(path / "recipe.toml"))
    state = checkpoint.load_state(path)
    pipeline = build(recipe, data_spec=DataSpec(**state["data_spec"]))
    stored_types = {k: v.get("type") for k, v in stored["diffusion"].items()}
    for kind, component in pipeline.components().items():
        if component.config.type == stored_types.get(kind) and state["extra"].get(kind):
            component.load_extra_state(state["extra"][kind])
    return pipeline


def sample_command(args: argparse.Namespace) -> int:
    source = Path(args.source).expanduser()
    path = checkpoint_dir(source, args.checkpoint)
    pipeline = load_pipeline(path, args.overrides)
    cfg = pipeline.recipe.sample
    n = args.n if args.n is not None else cfg.n
    seed = args.seed if args.seed is not None else cfg.seed
    if n < 1:
        raise ConfigError(f"--n must be at least 1 (got {n})")
    model = pipeline.model
    checkpoint.load_weights(model, path, "ema" if cfg.use_ema else "model")
    model.to(distributed.resolve_device(pipeline.recipe.run.device)).eval()
    run_root = path.parent.parent if path.parent.name == "checkpoints" else path
    if args.restore:
        return _restore(pipeline, model, args, run_root, n=n, seed=seed)
    images, steps = generate(pipeline, model, n, seed=seed, batch_size=cfg.batch_size,
                             guidance_scale=cfg.guidance_scale, label=cfg.label,
                             trajectory=args.trajectory)
    stem = f"{pipeline.recipe.diffusion.sampler.type}_seed{seed}"
    out = Path(args.out) if args.out else run_root / "generated" / (
        stem if args.individual else f"{stem}.png")
    if args.individual:
        save_individual(images, out)
    else:
        save_grid(images, out, nrow=grid_columns(pipeline, n))
    print(f"samples: {out}")
    if args.trajectory:
        strip = out.with_name(f"{out.stem}_trajectory.png")
        save_trajectory(steps, strip)
        print(f"trajectory (rows: x_t then x̂0 per sample; columns: steps T -> 0): {strip}")
    return 0


def _restore(pipeline: Pipeline, model: torch.nn.Module, args: argparse.Namespace,
             run_root: Path, *, n: int, seed: int) -> int:
    """Conditional restoration: degrade real images to a step, then run the sampler back."""
    x0 = load_images(Path(args.restore).expanduser(), pipeline.data_spec, n, flag="--restore")
    start = args.restore_step if args.restore_step is not None else pipeline.prior.start_step()
    if not 1 <= start <= pipeline.degradation.steps:
        raise ConfigError(
            f"--restore-step must be in 1..{pipeline.degradation.steps} (got {start})"
        )
    device = next(model.parameters()).device
    restored = restore(pipeline, model, x0.to(device), start=start, seed=seed)
    rows = torch.stack([x0, *(image.cpu() for image in restored)], 1).flatten(0, 1)
    out = Path(args.out) if args.out else run_root / "generated" / (
        f"restored_{pipeline.recipe.diffusion.sampler.type}_t{start}.png")
    save_grid(rows, out, nrow=4)
    print(f"restoration (columns: original, D(x0, {start}), direct x̂0, sampled): {out}")
    return 0


# -- images from files --------------------------------------------------------------------------
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_image(path: Path, size: int | None, channels: int, *, flag: str) -> torch.Tensor:
    """An image file as [C, H, W] in [-1, 1], resized to size×size when size is given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None:
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
            return pixels.view(image.height, image.width, -1).permute(2, 0, 1).float() / 127.5 - 1
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(f"{flag} '{path}' cannot be read as an image: {exc}") from None


def load_images(path: Path, spec: DataSpec, limit: int, *, flag: str) -> torch.Tensor:
    """One image file, or up to ``limit`` images of a folder (sorted), as [B, C, H, W]."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise ConfigError(f"{flag} '{path}' contains no images ({', '.join(IMAGE_SUFFIXES)})")
    elif path.exists():
        files = [path]
    else:
        raise ConfigError(f"{flag} '{path}' does not exist")
    return torch.stack([load_image(f, spec.image_size, spec.channels, flag=flag) for f in files])


# -- degrade ------------------------------------------------------------------------------------
def degrade_command(args: argparse.Namespace) -> int:
    from corediff.degrade_preview import save_strip, svd_error_table

    recipe = load_recipe(args.recipe, args.overrides)
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1 (got {args.n})")
    size = getattr(recipe.data, "image_size", None)
    channels = getattr(recipe.data, "channels", 3)
    image_path = Path(args.image).expanduser()
    x0 = load_image(image_path, size, channels, flag="--image")
    diffusion = recipe.diffusion
    schedule = instantiate("schedule", diffusion.schedule)
    schedule.fit(x0.unsqueeze(0))  # a data-calibrated schedule calibrates on this image
    degradation = instantiate("degradation", diffusion.degradation, schedule=schedule)
    out = Path(args.out) if args.out else image_path.with_name(f"{image_path.stem}_degraded.png")
    save_strip(degradation, x0, out, args.n)
    print(f"D(x0, t) for t = 0..{degradation.steps}, left to right: {out}")
    table = svd_error_table(degradation, x0)
    if table is not None:
        print("rank k  mean |x0 - D_k(x0)|")
        for rank, error in table:
            print(f"{rank:>6}  {error:.4f}")
    return 0
