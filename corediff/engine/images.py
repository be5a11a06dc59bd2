"""Image files as tensors in [-1, 1] (``corediff degrade --image``, ``sample --restore``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from corediff.errors import ConfigError

if TYPE_CHECKING:
    from corediff.builder import DataSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_image(path: Path, size: int | None, channels: int, *, flag: str) -> torch.Tensor:
    """An image file as [C, H, W] in [-1, 1], resized to size×size when size is given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None:
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
            return pixels.view(image.height, image.width, -1).permute(2, 0, 1).float() / 127.5 - 1
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(f"{flag} '{path}' cannot be read as an image: {exc}") from None


def load_images(path: Path, spec: DataSpec, limit: int, *, flag: str) -> torch.Tensor:
    """One image file, or up to ``limit`` images of a folder (sorted), as [B, C, H, W]."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise ConfigError(f"{flag} '{path}' contains no images ({', '.join(IMAGE_SUFFIXES)})")
    elif path.exists():
        files = [path]
    else:
        raise ConfigError(f"{flag} '{path}' does not exist")
    return torch.stack([load_image(f, spec.image_size, spec.channels, flag=flag) for f in files])
