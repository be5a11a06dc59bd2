"""Dataset plugins: digits, image_folder and sample_patches against their sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from corediff.errors import CorediffError
from corediff_plugins.datasets.digits import DigitsConfig, DigitsDataset
from corediff_plugins.datasets.image_folder import ImageFolderConfig, ImageFolderDataset
from corediff_plugins.datasets.sample_patches import (
    SamplePatchesConfig,
    SamplePatchesDataset,
    write_sample_folder,
)


def stack(dataset) -> tuple[torch.Tensor, list[int]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in items]), [label for _, label in items]


@pytest.mark.parametrize(("split", "size", "first"), [("train", 1500, 0), ("test", 297, 1500),
                                                      ("all", 1797, 0)])
def test_digits_split_labels_and_pixels(split, size, first):
    source = load_digits()
    dataset = DigitsDataset(DigitsConfig(split=split, image_size=8))
    images, labels = stack(dataset)
    assert len(dataset) == size and images.shape == (size, 1, 8, 8)
    assert images.dtype == torch.float32
    expected = torch.from_numpy(source.images[first:first + size]).float()[:, None] / 8 - 1
    torch.testing.assert_close(images, expected)
    assert labels == source.target[first:first + size].tolist()
    assert dataset.num_classes == 10 and dataset.channels == 1 and dataset.image_size == 8


def test_digits_upscaled_and_unlabelled():
    dataset = DigitsDataset(DigitsConfig(image_size=16, class_labels=False))
    images, labels = stack(dataset)
    assert images.shape == (1500, 1, 16, 16)
    assert images.min() >= -1 and images.max() <= 1 and images.min() < -0.99 and images.max() > 0.9
    small = DigitsDataset(DigitsConfig(image_size=8)).images
    torch.testing.assert_close(images.mean((1, 2, 3)), small.mean((1, 2, 3)), atol=0.03, rtol=0)
    assert set(labels) == {-1} and dataset.num_classes is None


def test_sample_patches_match_the_photos_and_the_seed():
    dataset = SamplePatchesDataset(SamplePatchesConfig(image_size=24, crop_size=24, count=20,
                                                       seed=7, class_labels=True))
    photos = load_sample_images().images
    for i in range(len(dataset)):
        image, label = dataset[i]
        top, left = int(dataset.top[i]), int(dataset.left[i])
        crop = photos[label][top:top + 24, left:left + 24]
        expected = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
        torch.testing.assert_close(image, expected)
    again = SamplePatchesDataset(SamplePatchesConfig(image_size=24, crop_size=24, count=20,
                                                     seed=7))
    other = SamplePatchesDataset(SamplePatchesConfig(image_size=24, crop_size=24, count=20,
                                                     seed=8))
    assert torch.equal(stack(again)[0], stack(dataset)[0])
    assert not torch.equal(stack(other)[0], stack(dataset)[0])
    assert stack(again)[1] == [-1] * 20


def test_sample_patches_resized_range():
    images, _ = stack(SamplePatchesDataset(SamplePatchesConfig(image_size=16, count=32)))
    assert images.shape == (32, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.1


def test_image_folder_reads_classes(tmp_path):
    files = write_sample_folder(tmp_path, count=6, size=20, classes=("cat", "dog", "wild"))
    (tmp_path / "wild" / "00005.png").rename(tmp_path / "wild" / "deep.PNG")
    dataset = ImageFolderDataset(ImageFolderConfig(root=str(tmp_path), image_size=20, hflip=False,
                                                   class_labels=True))
    assert len(dataset) == 6 and dataset.num_classes == 3 and dataset.classes == ["cat", "dog",
                                                                                  "wild"]
    images, labels = stack(dataset)
    assert labels == [0, 0, 1, 1, 2, 2]
    patches = stack(SamplePatchesDataset(SamplePatchesConfig(image_size=20, count=6)))[0]
    order = [0, 3, 1, 4, 2, 5]  # sorted paths: cat/00000, cat/00003, dog/00001, ...
    assert [files[i] for i in order[:5]] == dataset.paths[:5]
    torch.testing.assert_close(images, patches[order], atol=1 / 127.5, rtol=0)


def test_image_folder_resize_crop_flip_and_grey(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    grey = ImageFolderDataset(ImageFolderConfig(root=str(tmp_path), image_size=12, channels=1,
                                                crop="random"))
    image, label = grey[0]
    assert image.shape == (1, 12, 12) and label == -1 and grey.num_classes is None
    config = ImageFolderConfig(root=str(tmp_path), image_size=12, hflip=True)
    torch.manual_seed(0)
    views = {tuple(ImageFolderDataset(config)[0][0].flatten().tolist()) for _ in range(16)}
    plain = ImageFolderDataset(config.model_copy(update={"hflip": False}))[0][0]
    assert views == {tuple(plain.flatten().tolist()), tuple(plain.flip(-1).flatten().tolist())}


def test_image_folder_skips_unreadable_file(tmp_path):
    write_sample_folder(tmp_path, count=4, size=16)
    bad = tmp_path / "dog" / "00001.png"  # index 2 of cat/00000, cat/00002, dog/00001, ...
    bad.write_bytes(b"this is not a png at all")
    config = ImageFolderConfig(root=str(tmp_path), image_size=16, hflip=False, class_labels=True)
    dataset = ImageFolderDataset(config)
    assert len(dataset) == 4 and dataset.skipped == 0
    with pytest.warns(UserWarning, match="00001.png"):
        images, labels = stack(dataset)
    assert dataset.skipped == 1
    torch.testing.assert_close(images[2], images[3])  # replaced by the next index
    assert labels == [0, 0, 1, 1]
    with pytest.warns(UserWarning, match="00001.png"):
        assert ImageFolderDataset(config).scan() == 1


def test_image_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CorediffError, match=f"'{missing}' does not exist"):
        ImageFolderDataset(ImageFolderConfig(root=str(missing)))
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(CorediffError, match=f"'{tmp_path}' contains no images.*\\.png"):
        ImageFolderDataset(ImageFolderConfig(root=str(tmp_path)))
