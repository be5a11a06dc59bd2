"""Prepared uint8 image caches: decode and resize a folder of images once (``corediff data
prepare RECIPE``), then train from a memory-mapped file instead of decoding JPEGs every epoch.

A cache is one folder, by default ``<root>/.corediff_cache/<settings key>/``:

* ``pixels.u8``: every image's uint8 pixels, [H, W, C] row-major, one after another;
* ``index.npy``: int64 [N, 3], the byte offset, height and width of image i (height 0: the
  file was unreadable when the cache was written; a reader treats it as unreadable);
* ``manifest.json``: ``format``, ``settings``, ``count``, ``pixels_bytes`` and
  ``sources_sha256``.

What is cached: each image decoded and resized (shorter side to ``image_size``) but not
cropped. The crop, centre or random, and the flip are drawn at load time exactly as when
reading the files, so a cached dataset returns bit-identical tensors for either crop; a
square source (AFHQ) costs image_size² × channels bytes. ``settings`` holds whatever changes
the cached pixels (size, channels, resize filter, JPEG draft decoding); its hash names the
folder, so caches of different settings live side by side.

Staleness: ``sources_sha256`` is the SHA-256 of the sorted source list (relative path, size
and modification time of every file). :func:`open_current` recomputes it and refuses a cache
whose sources changed, rather than silently training on old pixels. Writing is atomic: a
cache is built in a temporary folder and renamed into place when complete.

The module knows nothing of any dataset plugin: a dataset supplies the settings, the source
list and the arrays (see :meth:`corediff.interfaces.Dataset.prepare_cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from corediff.errors import CorediffError

#: Version of the layout above; part of the settings key.
FORMAT = 1
#: Default folder of caches, inside the images' root.
FOLDER = ".corediff_cache"
MANIFEST, INDEX, PIXELS = "manifest.json", "index.npy", "pixels.u8"
#: What every manifest holds.
KEYS = ("format", "settings", "count", "pixels_bytes", "sources_sha256")
REBUILD = "rerun `corediff data prepare` with the same recipe to rebuild it"


def sources_sha256(root: str | Path, paths: Iterable[str | Path]) -> str:
    """SHA-256 (hex) of the sorted (relative path, size, mtime in ns) of ``paths`` under
    ``root``; a missing file counts with size and mtime -1."""
    root = Path(root)
    entries = sorted(Path(path).relative_to(root).as_posix() for path in paths)
    digest = hashlib.sha256()
    for name in entries:
        try:
            stat = (root / name).stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size = mtime = -1
        digest.update(f"{name}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def settings_key(settings: Mapping[str, Any]) -> str:
    """16 hex digits naming a cache folder: a hash of the format and ``settings``."""
    text = json.dumps({"format": FORMAT, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def location(root: str | Path, settings: Mapping[str, Any], base: str | Path | None = None
             ) -> Path:
    """The cache folder for ``settings``: ``<base or root/.corediff_cache>/<settings key>``."""
    folder = Path(base).expanduser() if base is not None else Path(root) / FOLDER
    return folder / settings_key(settings)


class Cache:
    """A cache opened for reading; ``image(i)`` is a read-only [H, W, C] uint8 view (None for
    a file that was unreadable). The memory map is opened lazily and not pickled, so every
    DataLoader worker maps the file itself instead of receiving a copy."""

    def __init__(self, directory: Path, manifest: dict[str, Any], index: np.ndarray) -> None:
        self.directory, self.manifest, self.index = directory, manifest, index
        self.channels = int(manifest["settings"]["channels"])
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            if self.manifest["pixels_bytes"] == 0:
                self._pixels = np.zeros(0, dtype=np.uint8)
            else:
                self._pixels = np.memmap(self.directory / PIXELS, dtype=np.uint8, mode="r")
        return self._pixels

    def image(self, i: int) -> np.ndarray | None:
        offset, height, width = (int(v) for v in self.index[i])
        if height == 0:
            return None
        size = height * width * self.channels
        return self.pixels[offset:offset + size].reshape(height, width, self.channels)


def write(directory: str | Path, images: Iterable[np.ndarray | None], *,
          settings: Mapping[str, Any], sources: str) -> Path:
    """Write ``images`` (uint8 [H, W] or [H, W, C], None for an unreadable one) as a cache at
    ``directory``, atomically replacing any cache there; returns the folder."""
    directory = Path(directory)
    channels = int(settings["channels"])
    temp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    try:
        remove_leftovers(directory.parent)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        rows, offset = [], 0
        with open(temp / PIXELS, "wb") as out:
            for array in images:
                if array is None:
                    rows.append((offset, 0, 0))
                    continue
                array = np.ascontiguousarray(array, dtype=np.uint8)
                array = array[:, :, None] if array.ndim == 2 else array
                if array.ndim != 3 or array.shape[2] != channels or 0 in array.shape:
                    raise ValueError(f"image {len(rows)} has shape {array.shape}, expected "
                                     f"[H, W, {channels}]")
                out.write(array.tobytes())
                rows.append((offset, *array.shape[:2]))
                offset += array.nbytes
        np.save(temp / INDEX, np.array(rows, dtype=np.int64).reshape(-1, 3))
        manifest = {"format": FORMAT, "settings": dict(settings), "count": len(rows),
                    "pixels_bytes": offset, "sources_sha256": sources}
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
        if directory.exists():
            directory.rename(old)
        temp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise CorediffError(f"cannot write the image cache '{directory}': {exc}") from None
    return directory


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the ``<key>.tmp-<pid>`` and ``<key>.old-<pid>`` folders a killed ``data
    prepare`` left in ``folder`` (only those of a pid no longer running, never a link)."""
    from corediff.engine.safe_files import pid_alive

    removed = []
    for path in folder.glob("*.*-*") if folder.is_dir() else ():
        found = re.fullmatch(r"[0-9a-f]{16}\.(?:tmp|old)-(\d+)", path.name)
        if found and not pid_alive(int(found.group(1))) and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def read(directory: str | Path) -> Cache:
    """Open the cache at ``directory``, checking that its files agree with its manifest."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise TypeError("manifest.json is not a JSON object")
        missing = [key for key in KEYS if key not in manifest]
        if missing:
            raise KeyError(f"manifest.json lacks {', '.join(missing)}")
        index = np.load(directory / INDEX, allow_pickle=False)
        size = (directory / PIXELS).stat().st_size
        channels = int(manifest["settings"]["channels"])
        if index.dtype != np.int64 or index.ndim != 2 or index.shape[1:] != (3,):
            raise ValueError(f"index.npy is {index.dtype} {index.shape}, not int64 [N, 3]")
        if (index < 0).any() or ((index[:, 1] == 0) != (index[:, 2] == 0)).any():
            raise ValueError("index.npy holds a negative offset or size, or an image of one "
                             "empty side")
        ends = index[:, 0] + index[:, 1] * index[:, 2] * channels
        ok = (manifest["format"] == FORMAT and type(manifest["count"]) is int
              and index.shape == (manifest["count"], 3) and size == manifest["pixels_bytes"]
              and isinstance(manifest["sources_sha256"], str)
              and (len(index) == 0 or ends.max() <= size))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorediffError(f"the image cache '{directory}' cannot be read ({exc}); "
                            f"{REBUILD}") from None
    if not ok:
        raise CorediffError(f"the image cache '{directory}' is incomplete or of another "
                            f"format; {REBUILD}")
    return Cache(directory, manifest, index)


def open_current(directory: str | Path, settings: Mapping[str, Any],
                 sources: Callable[[], str], hint: str = "") -> Cache | None:
    """The cache at ``directory`` when it exists and matches ``settings`` and the current
    source list (``sources()``, only computed when there is a cache); None when there is
    none; a :class:`CorediffError` naming the remedy when it is stale."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        return None
    cache = read(directory)
    if cache.manifest["settings"] != dict(settings):
        raise CorediffError(f"the image cache '{directory}' was written with other settings "
                            f"({cache.manifest['settings']}); {REBUILD}{hint}")
    current, written = sources(), cache.manifest["sources_sha256"]
    if current != written:
        raise CorediffError(
            f"the image cache '{directory}' is stale: the images it was made from changed "
            f"(source-list SHA-256 {written[:12]}…, now {current[:12]}…); {REBUILD}{hint}"
        )
    return cache

