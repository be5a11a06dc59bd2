"""Random square patches of scikit-learn's two bundled photographs (china.jpg, flower.jpg,
427×640 RGB): a small real-image dataset that needs no download, for tests and demos.

Patch i is the square of side ``crop_size`` at an offset drawn, with the photo, from a
generator seeded by ``seed`` (so the dataset is a function of its config), resized to
``image_size`` with antialiased bilinear filtering. ``write_sample_folder`` writes such
patches as PNG files into class folders: an AFHQ-like tree for ``image_folder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, PositiveInt
from sklearn.datasets import load_sample_images
from torch import Tensor, nn

from corediff.config import ComponentConfig, ImageSize
from corediff.interfaces import Dataset, DataSpec
from corediff_plugins.datasets.images import random_hflip, to_signed


class SamplePatchesConfig(ComponentConfig):
    type: Literal["sample_patches"] = "sample_patches"
    image_size: ImageSize = Field(32, description="Side of the square patches returned.")
    crop_size: PositiveInt | None = Field(
        None, le=427, description="Side cropped from the photo before resizing "
        "(None: 4 × image_size, at most 427)."
    )
    count: PositiveInt = Field(512, description="Number of patches.")
    seed: int = Field(0, description="Seed of the patch positions.")
    hflip: bool = Field(False, description="Mirror each patch left-right with probability 1/2.")
    class_labels: bool = Field(False, description="Label = photo (0: china, 1: flower), else -1.")


class SamplePatchesDataset(Dataset):
    """``count`` RGB patches in [-1, 1], deterministic given ``seed`` (unless ``hflip``)."""

    Config = SamplePatchesConfig

    @classmethod
    def describe(cls, config: ComponentConfig) -> DataSpec:
        """Channels and size from the config (class count: known once the data is read)."""
        return DataSpec(3, config.image_size)

    def __init__(self, config: SamplePatchesConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.photos = torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2)
        height, width = self.photos.shape[-2:]
        self.crop_size = cfg.crop_size or min(4 * cfg.image_size, height)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.photo = torch.randint(len(self.photos), (cfg.count,), generator=generator)
        self.top = torch.randint(height - self.crop_size + 1, (cfg.count,), generator=generator)
        self.left = torch.randint(width - self.crop_size + 1, (cfg.count,), generator=generator)
        self.channels = 3
        self.image_size = cfg.image_size
        self.num_classes = len(self.photos) if cfg.class_labels else None

    def __len__(self) -> int:
        return self.config.count

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        top, left, side = int(self.top[index]), int(self.left[index]), self.crop_size
        photo = int(self.photo[index])
        patch = to_signed(self.photos[photo, :, top:top + side, left:left + side])[None]
        if side != self.image_size:
            patch = nn.functional.interpolate(
                patch, size=self.image_size, mode="bilinear", antialias=True, align_corners=False
            ).clamp(-1.0, 1.0)
        image = random_hflip(patch[0]) if self.config.hflip else patch[0]
        return image, photo if self.num_classes is not None else -1


def write_sample_folder(
    path: str | Path, count: int, size: int, classes: Sequence[str] = ("cat", "dog"),
    seed: int = 0,
) -> list[Path]:
    """Write ``count`` PNG patches of side ``size`` as ``path/<class>/<i>.png``, patch i going
    to class ``classes[i % len(classes)]``; returns the files written."""
    dataset = SamplePatchesDataset(SamplePatchesConfig(image_size=size, count=count, seed=seed))
    files = []
    for i in range(count):
        image, _ = dataset[i]
        pixels = ((image + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        folder = Path(path) / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        files.append(folder / f"{i:05d}.png")
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(files[-1])
    return files
