"""Image files as tensors in [-1, 1] (``corediff degrade --image``, ``sample --restore``).

A file that is not an image, a decompression bomb (more pixels than Pillow's
``Image.MAX_IMAGE_PIXELS``: refused before it is decoded) or anything but a regular file
(a FIFO would block) is a :class:`~corediff.errors.ConfigError` naming it.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from corediff.errors import ConfigError
from corediff.limits import MAX_ASPECT_RATIO

if TYPE_CHECKING:
    from corediff.builder import DataSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_image(path: Path, size: int | None, channels: int, *, flag: str) -> torch.Tensor:
    """An image file as [C, H, W] in [-1, 1], resized to size×size when size is given."""
    from PIL import Image

    _check_regular(path, flag)
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_aspect(image.size, f"{flag} '{path}'")
                image = image.convert("L" if channels == 1 else "RGB")
                if size is not None:
                    image = image.resize((size, size), Image.Resampling.BICUBIC)
                pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                shape = (image.height, image.width, -1)
                return pixels.view(shape).permute(2, 0, 1).float() / 127.5 - 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ConfigError(
            f"{flag} '{path}' is refused as a possible decompression bomb: {exc}"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ConfigError(f"{flag} '{path}' cannot be read as an image: {exc}") from None


def check_aspect(size: tuple[int, int], what: str) -> None:
    """Refuse, before decoding, an image whose sides differ more than
    :data:`~corediff.limits.MAX_ASPECT_RATIO` times (a 1×100000 strip resized to a square
    side would need gigabytes)."""
    short, long = sorted(size)
    if short == 0 or long > MAX_ASPECT_RATIO * short:
        raise ConfigError(f"{what} is refused: its aspect ratio {size[0]}×{size[1]} is beyond "
                          f"1:{MAX_ASPECT_RATIO}")


def _check_regular(path: Path, flag: str) -> None:
    """Refuse anything but a regular file before opening it (a FIFO would block)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise ConfigError(f"{flag} '{path}' "
                          f"{'is a symbolic link to nowhere' if broken else 'does not exist'}"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"{flag} '{path}' cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else (
            "a directory" if stat.S_ISDIR(mode) else "not a regular file")
        raise ConfigError(f"{flag} '{path}' is {kind}, not an image file")


def load_images(path: Path, spec: DataSpec, limit: int, *, flag: str) -> torch.Tensor:
    """One image file, or up to ``limit`` images of a folder (sorted), as [B, C, H, W]."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*")
                       if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())[:limit]
        if not files:
            raise ConfigError(f"{flag} '{path}' contains no images ({', '.join(IMAGE_SUFFIXES)})")
    elif path.exists():
        files = [path]
    else:
        raise ConfigError(f"{flag} '{path}' does not exist")
    return torch.stack([load_image(f, spec.image_size, spec.channels, flag=flag) for f in files])
