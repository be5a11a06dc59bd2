"""``corediff import diffusers PATH_OR_REPO --run-dir DIR``: a diffusers pipeline folder (or
Hugging Face repo id) as a corediff run directory (:mod:`corediff.diffusers_import`)."""

from __future__ import annotations

import argparse

from corediff.diffusers_import import import_pipeline


def diffusers(args: argparse.Namespace) -> int:
    run = import_pipeline(args.source, args.run_dir, num_classes=args.num_classes,
                          data_root=args.data_root, revision=args.revision)
    print(f"imported '{args.source}' into {run} (checkpoints/last; sample with: corediff "
          f"sample {run})")
    return 0
