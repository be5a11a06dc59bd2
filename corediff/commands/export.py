"""``corediff export RUN --to diffusers DIR``: a run as a diffusers pipeline folder
(:mod:`corediff.diffusers_export`)."""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    from corediff.diffusers_export import export_run

    folder, pipeline_class, gap = export_run(args.source, args.out, which=args.checkpoint,
                                             overrides=args.overrides)
    print(f"exported {args.source} to {folder} ({pipeline_class}; UNet self-check: relative "
          f"gap {gap:.1e}); load it with diffusers.{pipeline_class}.from_pretrained('{folder}'), "
          f"push it with huggingface_hub.HfApi().upload_folder(repo_id=..., "
          f"folder_path='{folder}')")
    return 0
