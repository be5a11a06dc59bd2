"""Any folder tree of images (e.g. AFHQ's ``train/{cat,dog,wild}``, Choi et al. 2020).

Files with extensions .png .jpg .jpeg .bmp .webp (any case) are found recursively and sorted.
Each image is resized (shorter side to ``image_size``, bicubic), cropped to a square (centre
or random) and optionally mirrored. With ``class_labels`` the label is the index of the
image's first-level folder among the sorted folder names. Unreadable files are found lazily:
the first time one fails to load it is reported once with a warning, counted in ``skipped``
and replaced by the next readable index, so a bad file never stops training (a decompression
bomb, an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, counts as unreadable);
``scan()`` checks every file up front.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import Field
from torch import Tensor

from corediff.config import ComponentConfig, ImageSize
from corediff.errors import CorediffError
from corediff.interfaces import Dataset, DataSpec
from corediff_plugins.datasets.images import pil_to_tensor, random_hflip, resize_crop

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


class ImageFolderDataset(Dataset):
    """Images under ``root`` as [channels, image_size, image_size] tensors in [-1, 1]."""

    Config = ImageFolderConfig
    metrics = frozenset({"natural_images"})

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
            raise CorediffError(f"data.root '{root}' {reason}; expected a folder of images")
        self.paths = sorted(
            path for path in root.rglob("*")
            if path.suffix.lower() in EXTENSIONS and path.is_file()
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

    @property
    def skipped(self) -> int:
        """Number of files found unreadable so far."""
        return len(self.bad)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> Image.Image | None:
        """The decoded file, or None (warned once, counted) when it is unreadable."""
        try:
            with warnings.catch_warnings():
                # a decompression bomb (more than Image.MAX_IMAGE_PIXELS) is refused undecoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(self.paths[index]) as image:
                    return image.convert("RGB" if self.channels == 3 else "L")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as error:
            if index not in self.bad:
                self.bad.add(index)
                warnings.warn(
                    f"skipping unreadable image '{self.paths[index]}': {error}", stacklevel=3
                )
            return None

    def scan(self) -> int:
        """Decode every file now; returns how many are unreadable (each warned once)."""
        for index in range(len(self.paths)):
            if index not in self.bad:
                self._read(index)
        return len(self.bad)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Image ``index``, or when it is unreadable the next readable one (cyclically)."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self.bad:
                continue
            image = self._read(candidate)
            if image is not None:
                pixels = pil_to_tensor(resize_crop(image, self.image_size, self.config.crop))
                if self.config.hflip:
                    pixels = random_hflip(pixels)
                return pixels, self.labels[candidate]
        raise CorediffError(f"no image under data.root '{self.config.root}' is readable")
