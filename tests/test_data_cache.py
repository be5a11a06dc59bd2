"""Data at speed: JPEG draft decoding, the prepared uint8 cache (bit-exact, stale caches
refused) and `corediff data prepare`."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from corediff import data_cache
from corediff.cli import main
from corediff.errors import CorediffError
from corediff_plugins.datasets.image_folder import ImageFolderConfig, ImageFolderDataset
from corediff_plugins.datasets.images import draft_jpeg

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = ["data.image_size=16", "model.preset='tiny'", "model.attention_resolutions=[]"]


def photo_folder(root: Path) -> Path:
    """JPEG crops of scikit-learn's two photos (square, wide, tall) and one PNG, in classes."""
    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        folder = root / name
        folder.mkdir(parents=True)
        image = Image.fromarray(photo)  # 640 × 427
        image.crop((0, 0, 427, 427)).resize((512, 512)).save(folder / "square.jpg", quality=90)
        image.save(folder / "wide.jpeg", quality=90)
        image.crop((100, 0, 300, 427)).save(folder / "tall.JPG", quality=90)
        image.crop((200, 100, 330, 200)).save(folder / "small.png")
    return root


def items(dataset: ImageFolderDataset) -> tuple[torch.Tensor, list[int]]:
    pairs = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in pairs]), [label for _, label in pairs]


@pytest.fixture
def photos(tmp_path) -> Path:
    return photo_folder(tmp_path / "photos")


def config(root: Path, **fields) -> ImageFolderConfig:
    return ImageFolderConfig(root=str(root), image_size=64, hflip=False, class_labels=True,
                             **fields)


def test_draft_decodes_jpegs_small_and_close_to_a_full_decode(photos):
    with Image.open(photos / "china" / "square.jpg") as image:
        draft_jpeg(image, "RGB", 64)
        assert image.size == (64, 64)  # 1/8 scale: 512 / 8 = 64, still >= 64
    with Image.open(photos / "china" / "wide.jpeg") as image:
        draft_jpeg(image, "RGB", 64)
        assert min(image.size) >= 64 and image.size == (160, 107)  # 1/4 scale
    for channels in (3, 1):
        full = items(ImageFolderDataset(config(photos, draft=False, channels=channels)))[0]
        fast = items(ImageFolderDataset(config(photos, channels=channels)))[0]
        assert fast.shape == full.shape == (8, channels, 64, 64)
        is_png = [path.suffix == ".png" for path in ImageFolderDataset(config(photos)).paths]
        assert torch.equal(fast[is_png], full[is_png])  # only JPEGs are drafted
        assert 0 < (fast - full).abs().mean() < 0.02


@pytest.mark.parametrize("crop", ["center", "random"])
def test_cached_dataset_returns_the_same_tensors_bit_exactly(photos, crop):
    cfg = config(photos, crop=crop)
    directory = ImageFolderDataset.prepare_cache(cfg)
    assert directory.parent == photos / data_cache.FOLDER
    assert (directory / data_cache.MANIFEST).is_file()
    cached, uncached = ImageFolderDataset(cfg), ImageFolderDataset(cfg.model_copy(
        update={"cache": "off"}))
    assert cached.cache is not None and uncached.cache is None
    assert cached.paths == uncached.paths  # the cache folder holds no images
    torch.manual_seed(0)
    images, labels = items(cached)
    torch.manual_seed(0)
    reference, reference_labels = items(uncached)
    assert torch.equal(images, reference) and labels == reference_labels == [0] * 4 + [1] * 4
    clone = pickle.loads(pickle.dumps(cached))  # a DataLoader worker maps the file itself
    assert clone.cache._pixels is None
    if crop == "center":
        assert torch.equal(clone[3][0], reference[3])
    assert ImageFolderDataset.prepare_cache(cfg) == directory  # current: kept


def test_a_stale_or_broken_cache_is_refused(photos):
    cfg = config(photos)
    directory = ImageFolderDataset.prepare_cache(cfg)
    stamp = photos / "china" / "tall.JPG"
    os.utime(stamp, ns=(stamp.stat().st_atime_ns, stamp.stat().st_mtime_ns + 10**9))
    with pytest.raises(CorediffError, match="stale.*rerun `corediff data prepare`.*'off'"):
        ImageFolderDataset(cfg)
    assert ImageFolderDataset(cfg.model_copy(update={"cache": "off"})).cache is None
    ImageFolderDataset.prepare_cache(cfg)  # rebuilt
    assert ImageFolderDataset(cfg).cache is not None
    (photos / "flower" / "small.png").unlink()
    with pytest.raises(CorediffError, match="stale"):
        ImageFolderDataset(cfg)
    ImageFolderDataset.prepare_cache(cfg)
    with open(directory / data_cache.PIXELS, "r+b") as pixels:
        pixels.truncate(100)
    with pytest.raises(CorediffError, match="incomplete.*corediff data prepare"):
        ImageFolderDataset(cfg)


def test_unreadable_files_stay_unreadable_in_the_cache(photos):
    (photos / "china" / "wide.jpeg").write_bytes(b"not a jpeg")
    cfg = config(photos)
    with pytest.warns(UserWarning, match="wide.jpeg"):
        ImageFolderDataset.prepare_cache(cfg)
    dataset = ImageFolderDataset(cfg)
    with pytest.warns(UserWarning, match="wide.jpeg.*corediff data prepare"):
        assert dataset.scan() == 1
    assert torch.equal(dataset[3][0], dataset[4][0])  # wide.jpeg: replaced by the next index


def test_cli_data_prepare(photos, tmp_path, capsys):
    recipe, root = str(RECIPES / "svd_afhq.toml"), f"data.root='{photos}'"
    sets = [arg for item in [root, *TINY] for arg in ("--set", item)]
    assert main(["data", "prepare", recipe, *sets]) == 0
    out = capsys.readouterr().out
    assert "8 images" in out and data_cache.FOLDER in out
    elsewhere = tmp_path / "caches"
    assert main(["data", "prepare", recipe, *sets, "--set", f"data.cache_dir='{elsewhere}'"]) == 0
    assert len(list(elsewhere.glob("*/manifest.json"))) == 1
    assert main(["data", "prepare", str(RECIPES / "quickstart.toml")]) == 2
    assert "dataset 'digits' has nothing to prepare" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["data", "prepare", recipe, "--set", f"data.root='{missing}'", *sets[2:]]) == 2
    assert f"data.root '{missing}' does not exist" in capsys.readouterr().err
