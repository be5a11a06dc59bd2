"""Random square patches of photographs bundled with Python packages, so no download: a small
real-image dataset for tests, demos and sample-quality metrics.

* ``source = "sklearn"`` (default): scikit-learn's two photographs (china.jpg, flower.jpg,
  427×640 RGB).
* ``source = "all"``: those two, then every photograph shipped inside the scikit-image wheel
  (:data:`SKIMAGE_PHOTOS`, read from the package's files, never fetched by pooch): 8 colour
  photos and 10 greyscale ones (given as RGB with three equal channels); the synthetic
  images (checkerboard, phantom, colour wheel, logo, horse silhouette), the tiny ones
  (microaneurysms, the LFW faces) and motorcycle_right (a near copy of motorcycle_left) are
  left out. 20 photos in all, of very different content, 172 to 1411 pixels on a side.

Patch i is the square of side ``crop_size`` (clamped to each photo's shorter side) at an
offset drawn, with the photo (uniformly among the photos), from a generator seeded by
``seed`` (so the dataset is a function of its config), resized to ``image_size`` with
antialiased bilinear filtering. With ``source = "all"`` each patch is also mirrored
left-right or not by a draw of the same generator. ``write_sample_folder`` writes such
patches as PNG files into class folders: an AFHQ-like tree for ``image_folder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, PositiveInt
from sklearn.datasets import load_sample_images
from torch import Tensor, nn

from corediff.config import ComponentConfig, ImageSize
from corediff.errors import CorediffError
from corediff.interfaces import Dataset, DataSpec
from corediff_plugins.datasets.images import random_hflip, to_signed

#: scikit-learn's photos, in ``load_sample_images`` order (class labels 0 and 1).
SKLEARN_PHOTOS = ("china", "flower")
#: The photographs of ``skimage.data`` bundled in the scikit-image wheel: (name, file), in
#: the order of their class labels (2, 3, ... after scikit-learn's).
SKIMAGE_PHOTOS = (
    ("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"), ("motorcycle", "motorcycle_left.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"), ("immunohistochemistry", "ihc.png"),
    ("retina", "retina.jpg"), ("camera", "camera.png"), ("coins", "coins.png"),
    ("moon", "moon.png"), ("page", "page.png"), ("text", "text.png"),
    ("clock", "clock_motion.png"), ("brick", "brick.png"), ("grass", "grass.png"),
    ("gravel", "gravel.png"), ("cell", "cell.png"),
)


def skimage_photos() -> list[Tensor]:
    """The :data:`SKIMAGE_PHOTOS` as uint8 [3, H, W] tensors (greyscale ones repeated)."""
    try:
        folder = resources.files("skimage.data")
    except ModuleNotFoundError:
        raise CorediffError(
            "data.source = 'all' needs scikit-image: pip install scikit-image"
        ) from None
    photos = []
    for _, name in SKIMAGE_PHOTOS:
        with resources.as_file(folder / name) as path, Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        photos.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    return photos


class SamplePatchesConfig(ComponentConfig):
    type: Literal["sample_patches"] = "sample_patches"
    image_size: ImageSize = Field(32, description="Side of the square patches returned.")
    crop_size: PositiveInt | None = Field(
        None, le=427, description="Side cropped from the photo before resizing "
        "(None: 4 × image_size, at most 427; at most each photo's shorter side)."
    )
    count: PositiveInt = Field(512, description="Number of patches.")
    seed: int = Field(0, description="Seed of the patch positions (and, 'all', mirrorings).")
    hflip: bool = Field(False, description="Mirror each patch left-right with probability 1/2.")
    class_labels: bool = Field(
        False, description="Label = photo index (0: china, 1: flower, then SKIMAGE_PHOTOS' "
        "order), else -1."
    )
    source: Literal["sklearn", "all"] = Field(
        "sklearn", description="'sklearn': scikit-learn's 2 photos; 'all': those and the 18 "
        "photographs bundled with scikit-image (seeded crops and mirrorings)."
    )


class SamplePatchesDataset(Dataset):
    """``count`` RGB patches in [-1, 1], deterministic given ``seed`` (unless ``hflip``)."""

    Config = SamplePatchesConfig
    metrics = frozenset({"natural_images"})

    @classmethod
    def fixed_items(cls, config: ComponentConfig) -> bool:
        """Patches are cut once from the seed; ``hflip`` only mirrors them."""
        return True

    @classmethod
    def describe(cls, config: ComponentConfig) -> DataSpec:
        """Channels and size from the config (class count: known once the data is read)."""
        return DataSpec(3, config.image_size)

    def __init__(self, config: SamplePatchesConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.photos: Tensor | list[Tensor] = torch.from_numpy(
            np.stack(load_sample_images().images)).permute(0, 3, 1, 2)
        self.names = list(SKLEARN_PHOTOS)
        height, width = self.photos.shape[-2:]
        self.crop_size = cfg.crop_size or min(4 * cfg.image_size, height)
        generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.source == "sklearn":
            self.sides = torch.full((len(self.photos),), self.crop_size)
            self.photo = torch.randint(len(self.photos), (cfg.count,), generator=generator)
            self.top = torch.randint(height - self.crop_size + 1, (cfg.count,),
                                     generator=generator)
            self.left = torch.randint(width - self.crop_size + 1, (cfg.count,),
                                      generator=generator)
            self.mirror = torch.zeros(cfg.count, dtype=torch.bool)
        else:
            self.photos = [*self.photos, *skimage_photos()]
            self.names += [name for name, _ in SKIMAGE_PHOTOS]
            self.crop_size = cfg.crop_size or 4 * cfg.image_size
            shapes = torch.tensor([photo.shape[-2:] for photo in self.photos])
            self.sides = shapes.min(1).values.clamp(max=self.crop_size)
            self.photo = torch.randint(len(self.photos), (cfg.count,), generator=generator)
            free = shapes[self.photo] - self.sides[self.photo, None] + 1  # offsets per axis
            offsets = (torch.rand(cfg.count, 2, generator=generator) * free).long()
            self.top, self.left = offsets.unbind(1)
            self.mirror = torch.rand(cfg.count, generator=generator) < 0.5
        self.channels = 3
        self.image_size = cfg.image_size
        self.num_classes = len(self.photos) if cfg.class_labels else None

    def __len__(self) -> int:
        return self.config.count

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        photo = int(self.photo[index])
        top, left, side = int(self.top[index]), int(self.left[index]), int(self.sides[photo])
        patch = to_signed(self.photos[photo][:, top:top + side, left:left + side])[None]
        if side != self.image_size:
            patch = nn.functional.interpolate(
                patch, size=self.image_size, mode="bilinear", antialias=True, align_corners=False
            ).clamp(-1.0, 1.0)
        image = patch[0].flip(-1) if self.mirror[index] else patch[0]
        image = random_hflip(image) if self.config.hflip else image
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
