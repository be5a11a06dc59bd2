"""``corediff data fetch NAME``: download a public dataset into the layout recipes expect
(:mod:`corediff.fetch`). ``corediff data prepare RECIPE``: write the recipe's dataset cache
(decoded, resized uint8 images, :mod:`corediff.data_cache`) so training reads a memory map
instead of decoding files.

The dataset class comes from the registry by the recipe's ``[data] type``; it prepares through
its ``prepare_cache`` hook (:class:`corediff.interfaces.Dataset`). A dataset without one is
refused: there is nothing to prepare.
"""

from __future__ import annotations

import argparse
import time

from corediff import data_cache
from corediff.errors import CorediffError
from corediff.recipe import load_recipe
from corediff.registry import registry


def prepare(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    name = recipe.data.type
    start = time.perf_counter()
    directory = registry("dataset").get(name).prepare_cache(recipe.data)
    if directory is None:
        raise CorediffError(f"dataset '{name}' has nothing to prepare (it reads no files)")
    cache = data_cache.read(directory)
    unreadable = int((cache.index[:, 1] == 0).sum())
    if unreadable == len(cache):
        raise CorediffError(f"none of the {len(cache)} images of the recipe's data can be "
                            "read (see the warnings above); the cache records them unreadable")
    print(f"{len(cache)} images ({cache.manifest['pixels_bytes'] / 2**20:.1f} MiB, "
          f"{unreadable} unreadable) cached in {directory} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from corediff.fetch import archive_for
    from corediff.fetch import fetch as fetch_dataset

    archive = archive_for(args.name, args.version)
    root = args.root or f"data/{args.name}"
    print(f"fetching {args.name} from {args.url or archive.url} into {root}")
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=archive.file) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        folder = fetch_dataset(args.name, root, version=args.version, url=args.url,
                               progress=progress)
    splits = ", ".join(f"{split}/{{{','.join(classes)}}}"
                       for split, classes in archive.counts.items())
    print(f"{args.name}: {sum(sum(c.values()) for c in archive.counts.values())} images in "
          f"{folder} ({splits}); train with --set data.root={folder}/train")
    return 0
