"""Any folder tree of images (e.g. AFHQ's ``train/{cat,dog,wild}``, Choi et al. 2020).

Files with extensions .png .jpg .jpeg .bmp .webp (any case) are found recursively and sorted.
Each image is resized (shorter side to ``image_size``, bicubic), cropped to a square (centre
or random) and optionally mirrored. With ``class_labels`` the label is the index of the
image's first-level folder among the sorted folder names. Unreadable files are found lazily:
the first time one fails to load it is reported once with a warning, counted in ``skipped``
and replaced by the next readable index, so a bad file never stops training (a decompression
bomb, an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, counts as unreadable);
``scan()`` checks every file up front.

Speed (``draft``, ``cache``): a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose
shorter side is still >= ``image_size`` (PIL's draft mode; pixels differ slightly from a full
decode, other formats are unaffected). ``corediff data prepare RECIPE`` writes the decoded,
resized (uncropped) images as a uint8 memory-mapped cache (:mod:`corediff.data_cache`, by
default in ``<root>/.corediff_cache/``); with ``cache = "auto"`` the dataset reads it when it
exists, giving bit-identical tensors (crop and flip are still drawn per item), and refuses it
when the files changed since it was written.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field
from torch import Tensor

from corediff import data_cache
from corediff.config import ComponentConfig, ImageSize
from corediff.errors import CorediffError
from corediff.interfaces import Dataset, DataSpec
from corediff.limits import MAX_ASPECT_RATIO
from corediff_plugins.datasets.images import (
    array_to_tensor,
    crop_offset,
    draft_jpeg,
    random_hflip,
    resize_shorter,
)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFolderConfig(ComponentConfig):
    type: Literal["image_folder"] = "image_folder"
    root: str = Field(description="Folder searched recursively for images.")
    image_size: ImageSize = Field(64, description="Side of the square images returned.")
    crop: Literal["center", "random"] = Field(
        "center", description="Square crop after resizing the shorter side to image_size."
    )
    hflip: bool = Field(True, description="Mirror each image left-right with probability 1/2.")
    class_labels: bool = Field(
        False, description="Label = index of the first-level folder (sorted names), else -1."
    )
    channels: Literal[1, 3] = Field(3, description="3: RGB, 1: greyscale.")
    draft: bool = Field(
        True, description="Decode JPEGs at the smallest DCT scale still >= image_size (several "
        "times faster; pixels differ slightly from a full decode)."
    )
    cache: Literal["auto", "off"] = Field(
        "auto", description="auto: read the cache written by `corediff data prepare` when it "
        "exists (a stale one is refused); off: always decode the files."
    )
    cache_dir: str | None = Field(
        None, description="Folder of prepared caches (None: <root>/.corediff_cache)."
    )


class ImageFolderDataset(Dataset):
    """Images under ``root`` as [channels, image_size, image_size] tensors in [-1, 1]."""

    Config = ImageFolderConfig
    metrics = frozenset({"natural_images"})

    @classmethod
    def fixed_items(cls, config: ComponentConfig) -> bool:
        """A centre crop gives each file the same image every epoch (hflip only mirrors it);
        a random crop does not."""
        return config.crop == "center"

    @classmethod
    def describe(cls, config: ComponentConfig) -> DataSpec:
        """Channels and size from the config (class count: known once the data is read)."""
        return DataSpec(config.channels, config.image_size)

    def __init__(self, config: ImageFolderConfig) -> None:
        super().__init__(config)
        cfg = self.config
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            reason = "is not a folder" if root.exists() else "does not exist"
            hint = ("; download AFHQ with `corediff data fetch afhq` (into data/afhq)"
                    if "afhq" in str(root).lower() else "")
            raise CorediffError(f"data.root '{root}' {reason}; expected a folder of images"
                                f"{hint}")
        self.root = root
        self.paths = sorted(
            path for path in root.rglob("*")
            if path.suffix.lower() in EXTENSIONS and path.is_file()
            and data_cache.FOLDER not in path.relative_to(root).parts
        )
        if not self.paths:
            raise CorediffError(
                f"data.root '{root}' contains no images (looked for {', '.join(EXTENSIONS)}, "
                "in any case, recursively)"
            )
        self.channels = cfg.channels
        self.image_size = cfg.image_size
        self.num_classes = None
        self.classes: list[str] = []
        self.labels = [-1] * len(self.paths)
        if cfg.class_labels:
            loose = [path for path in self.paths if path.parent == root]
            if loose:
                raise CorediffError(
                    f"data.class_labels = true needs every image of '{root}' inside a class "
                    f"folder, but '{loose[0]}' is not"
                )
            folders = [path.relative_to(root).parts[0] for path in self.paths]
            self.classes = sorted(set(folders))
            self.num_classes = len(self.classes)
            self.labels = [self.classes.index(folder) for folder in folders]
        self.bad: set[int] = set()
        self.cache = None if cfg.cache == "off" else data_cache.open_current(
            self.cache_location, self.cache_settings, self.sources_sha256,
            hint=" (or set data.cache = 'off' to read the files)",
        )

    @property
    def cache_settings(self) -> dict[str, object]:
        """What the cached pixels depend on (names the cache folder)."""
        cfg = self.config
        return {"image_size": cfg.image_size, "channels": cfg.channels, "draft": cfg.draft,
                "resize": "bicubic shorter side"}

    @property
    def cache_location(self) -> Path:
        """Where ``corediff data prepare`` writes, and the dataset reads, the cache."""
        return data_cache.location(self.root, self.cache_settings, self.config.cache_dir)

    def sources_sha256(self) -> str:
        """Checksum of the current source list (what a stale cache is detected by)."""
        return data_cache.sources_sha256(self.root, self.paths)

    @classmethod
    def prepare_cache(cls, config: ImageFolderConfig) -> Path:
        """Decode and resize every image into the cache (kept when already current)."""
        dataset = cls(config.model_copy(update={"cache": "off"}))
        directory, settings = dataset.cache_location, dataset.cache_settings
        sources = dataset.sources_sha256()
        try:
            if data_cache.open_current(directory, settings, lambda: sources) is not None:
                return directory
        except CorediffError:
            pass  # stale or broken: rebuilt below
        images = (dataset._load(index) for index in range(len(dataset)))
        return data_cache.write(directory, images, settings=settings, sources=sources)

    @property
    def skipped(self) -> int:
        """Number of files found unreadable so far."""
        return len(self.bad)

    def __len__(self) -> int:
        return len(self.paths)

    def _unreadable(self, index: int, error: object) -> None:
        if index not in self.bad:
            self.bad.add(index)
            warnings.warn(f"skipping unreadable image '{self.paths[index]}': {error}",
                          stacklevel=5)

    def _read(self, index: int) -> Image.Image | None:
        """The decoded file, or None (warned once, counted) when it is unreadable."""
        mode = "RGB" if self.channels == 3 else "L"
        try:
            with warnings.catch_warnings():
                # a decompression bomb (more than Image.MAX_IMAGE_PIXELS) is refused undecoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(self.paths[index]) as image:
                    short, long = sorted(image.size)
                    if long > MAX_ASPECT_RATIO * short:  # resizing it would need gigabytes
                        raise ValueError(f"its aspect ratio {image.width}×{image.height} is "
                                         f"beyond 1:{MAX_ASPECT_RATIO}")
                    if self.config.draft:
                        draft_jpeg(image, mode, self.image_size)
                    return image.convert(mode)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as error:
            self._unreadable(index, error)
            return None

    def _load(self, index: int) -> np.ndarray | None:
        """Image ``index`` resized (shorter side = image_size, uncropped) as uint8 [H, W, C],
        from the cache when there is one; None when it is unreadable."""
        if self.cache is not None:
            array = self.cache.image(index)
            if array is None:
                self._unreadable(index, "recorded unreadable by `corediff data prepare`")
            return array
        image = self._read(index)
        return None if image is None else np.asarray(resize_shorter(image, self.image_size))

    def scan(self) -> int:
        """Decode every file now; returns how many are unreadable (each warned once)."""
        for index in range(len(self.paths)):
            if index not in self.bad:
                self._load(index)
        return len(self.bad)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Image ``index``, or when it is unreadable the next readable one (cyclically)."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self.bad:
                continue
            array = self._load(candidate)
            if array is not None:
                size = self.image_size
                left, top = crop_offset(array.shape[1], array.shape[0], size, self.config.crop)
                pixels = array_to_tensor(array[top:top + size, left:left + size])
                if self.config.hflip:
                    pixels = random_hflip(pixels)
                return pixels, self.labels[candidate]
        raise CorediffError(f"no image under data.root '{self.config.root}' is readable")
