"""Can the image_folder loader keep up with training? 64 JPEGs of 512×512 (crops of
scikit-learn's two photos, like AFHQ) loaded at 64×64, batch 16, in one loader process
(``num_workers = 0``), three ways:

* ``full``: every JPEG fully decoded, then resized (``draft = false``, ``cache = "off"``);
* ``draft``: decoded at 1/8 DCT scale, 64×64 directly (the default without a cache);
* ``cache``: the uint8 memory map written by ``corediff data prepare``.

and the training images/s of the tiny U-Net at 64×64, batch 16 (forward, backward, AdamW; bf16
autocast on CUDA, as ``benchmarks/throughput.py``). ``workers`` = model / loader: loader
processes needed to keep the model fed. OpenMP threads sleep while idle, as in the CLI
(``corediff.commands``): spinning ones made the CPU step ~10× slower on a shared CPU.
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch is imported

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torch.utils.data import DataLoader

import corediff
from corediff.engine.distributed import resolve_device
from corediff_plugins.datasets.image_folder import ImageFolderConfig, ImageFolderDataset

COUNT, SOURCE, SIZE, BATCH = 64, 512, 64, 16


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("afhq_like")
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(photo) for photo in load_sample_images().images]  # 640 × 427
    for i in range(COUNT):
        side = int(rng.integers(256, 428))
        left, top = int(rng.integers(0, 641 - side)), int(rng.integers(0, 428 - side))
        crop = photos[i % 2].crop((left, top, left + side, top + side))
        crop.resize((SOURCE, SOURCE), Image.Resampling.BICUBIC).save(
            root / f"{i:03d}.jpg", quality=90)
    return root


def loader_rate(dataset: ImageFolderDataset, epochs: int = 3) -> float:
    """Best images/s over ``epochs`` passes of a DataLoader (batch 16, no workers)."""
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=0)
    best = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        count = sum(len(images) for images, _ in loader)
        best = max(best, count / (time.perf_counter() - start))
    return best


def model_rate(device: torch.device, steps: int) -> float:
    """Training images/s of the tiny U-Net at 64×64, batch 16."""
    model = corediff.create("model", "unet", preset="tiny", in_channels=3, out_channels=3,
                            image_size=SIZE).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=device)
    t = torch.randint(1, 1000, (BATCH,), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = model(x, t).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3 if device.type == "cuda" else 1):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return BATCH * steps / (time.perf_counter() - start)


def test_loader_paths_versus_the_model(benchmark, jpegs, capsys):
    base = ImageFolderConfig(root=str(jpegs), image_size=SIZE, hflip=True, crop="random")
    full = ImageFolderDataset(base.model_copy(update={"draft": False, "cache": "off"}))
    draft = ImageFolderDataset(base.model_copy(update={"cache": "off"}))
    start = time.perf_counter()
    ImageFolderDataset.prepare_cache(base)
    prepare_s = time.perf_counter() - start
    cached = ImageFolderDataset(base)
    assert cached.cache is not None and full.cache is None and draft.cache is None
    device = resolve_device("auto")
    rates = {"full": loader_rate(full), "draft": loader_rate(draft), "cache": loader_rate(cached),
             "model": model_rate(device, steps=20 if device.type == "cuda" else 2)}
    benchmark.pedantic(lambda: loader_rate(cached, epochs=1), rounds=3, iterations=1)
    benchmark.extra_info.update({f"{name}_images_per_s": rate for name, rate in rates.items()})
    benchmark.extra_info.update(prepare_s=prepare_s, device=str(device))
    with capsys.disabled():  # the table shows without -s
        print(f"\n{COUNT} JPEGs {SOURCE}² -> {SIZE}², batch {BATCH}, one loader process; model: "
              f"unet/tiny on {device}; cache prepared in {prepare_s:.2f} s")
        print(f"{'path':<8}{'images/s':>10}{'vs full':>9}{'workers':>9}")
        for name, rate in rates.items():
            workers = "" if name == "model" else f"{rates['model'] / rate:.2f}"
            print(f"{name:<8}{rate:>10.0f}{rate / rates['full']:>8.1f}x{workers:>9}")
    assert rates["draft"] > 1.5 * rates["full"] and rates["cache"] > rates["draft"]
