"""sample_patches with source = "all": scikit-learn's and scikit-image's bundled photographs,
read offline, cut into seeded random crops with seeded mirrorings."""

from __future__ import annotations

import socket
from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from corediff_plugins.datasets.sample_patches import (
    SKIMAGE_PHOTOS,
    SKLEARN_PHOTOS,
    SamplePatchesConfig,
    SamplePatchesDataset,
)

pytest.importorskip("skimage")


def stack(dataset: SamplePatchesDataset) -> tuple[torch.Tensor, list[int]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in items]), [label for _, label in items]


def config(**changes: object) -> SamplePatchesConfig:
    return SamplePatchesConfig(**{"source": "all", "count": 300, "seed": 4, **changes})


@pytest.fixture(scope="module")
def labelled() -> SamplePatchesDataset:
    return SamplePatchesDataset(config(class_labels=True))


def test_every_photo_is_bundled_and_loads_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = resources.files("skimage.data")
    assert all((folder / name).is_file() for _, name in SKIMAGE_PHOTOS)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    dataset = SamplePatchesDataset(config(count=5))
    assert len(dataset.photos) == len(SKLEARN_PHOTOS) + len(SKIMAGE_PHOTOS) == 20
    assert dataset.names[:3] == ["china", "flower", "astronaut"]


def test_count_shape_range_and_labels(labelled: SamplePatchesDataset) -> None:
    images, labels = stack(labelled)
    assert len(labelled) == 300 and images.shape == (300, 3, 32, 32)
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.2
    assert labelled.num_classes == 20 and labels == labelled.photo.tolist()
    assert set(labels) == set(range(20))  # 300 uniform draws reach every photo
    assert 0.35 < labelled.mirror.float().mean() < 0.65
    unlabelled = SamplePatchesDataset(config())
    again = stack(unlabelled)
    assert torch.equal(again[0], images) and again[1] == [-1] * 300


def test_patches_are_crops_of_the_labelled_photo(labelled: SamplePatchesDataset) -> None:
    sklearn_photos = load_sample_images().images
    folder = resources.files("skimage.data")
    side = labelled.crop_size
    assert side == 128  # 4 × image_size, within every photo's shorter side (172 at least)
    for i in range(0, 300, 7):
        image, label = labelled[i]
        if label < len(SKLEARN_PHOTOS):
            photo = sklearn_photos[label]
        else:
            with Image.open(folder / SKIMAGE_PHOTOS[label - 2][1]) as opened:
                photo = np.asarray(opened.convert("RGB"))
        top, left = int(labelled.top[i]), int(labelled.left[i])
        assert 0 <= top <= photo.shape[0] - side and 0 <= left <= photo.shape[1] - side
        crop = torch.from_numpy(photo[top:top + side, left:left + side].copy())
        crop = crop.permute(2, 0, 1)[None].float() / 127.5 - 1
        expected = torch.nn.functional.interpolate(
            crop, size=32, mode="bilinear", antialias=True, align_corners=False
        ).clamp(-1, 1)[0]
        expected = expected.flip(-1) if labelled.mirror[i] else expected
        torch.testing.assert_close(image, expected)


def test_deterministic_given_the_seed_and_sizes_follow_the_config() -> None:
    first = stack(SamplePatchesDataset(config(count=40)))[0]
    assert torch.equal(first, stack(SamplePatchesDataset(config(count=40)))[0])
    assert not torch.equal(first, stack(SamplePatchesDataset(config(count=40, seed=5)))[0])
    small = SamplePatchesDataset(config(count=20, image_size=16, crop_size=200))
    images, _ = stack(small)
    assert images.shape == (20, 3, 16, 16)
    # a crop side larger than a photo's shorter side is clamped to it (page: 191, text: 172)
    assert small.sides.tolist() == [min(200, photo.shape[-2], photo.shape[-1])
                                    for photo in small.photos]
    assert min(small.sides.tolist()) == 172


def test_the_default_source_is_still_the_two_sklearn_photos() -> None:
    dataset = SamplePatchesDataset(SamplePatchesConfig(count=8, class_labels=True))
    assert dataset.config.source == "sklearn" and dataset.num_classes == 2
    assert not dataset.mirror.any()
