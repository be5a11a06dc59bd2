"""``corediff degrade RECIPE --image PATH``: preview a recipe's degradation D(x0, t)."""

from __future__ import annotations

import argparse
from pathlib import Path

from corediff.builder import instantiate
from corediff.degrade_preview import save_strip, svd_error_table
from corediff.engine.images import load_image
from corediff.paths import check_file
from corediff.recipe import load_recipe


def main(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    size = getattr(recipe.data, "image_size", None)
    channels = getattr(recipe.data, "channels", 3)
    image_path = Path(args.image).expanduser()
    x0 = load_image(image_path, size, channels, flag="--image")
    out = Path(args.out) if args.out else image_path.with_name(f"{image_path.stem}_degraded.png")
    check_file("--out" if args.out else "the output beside --image", out)
    diffusion = recipe.diffusion
    schedule = instantiate("schedule", diffusion.schedule)
    schedule.fit(x0.unsqueeze(0))  # a data-calibrated schedule calibrates on this image
    degradation = instantiate("degradation", diffusion.degradation, schedule=schedule)
    save_strip(degradation, x0, out, args.n)
    print(f"D(x0, t) for t = 0..{degradation.steps}, left to right: {out}")
    table = svd_error_table(degradation, x0)
    if table is not None:
        print("rank k  mean |x0 - D_k(x0)|")
        for rank, error in table:
            print(f"{rank:>6}  {error:.4f}")
    return 0
