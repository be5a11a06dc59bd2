"""Image transforms shared by the dataset plugins: uint8 arrays and PIL images to float
tensors in [-1, 1], square resize-and-crop, random horizontal flip."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_signed(pixels: Tensor) -> Tensor:
    """uint8 values in [0, 255] -> float32 in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def pil_to_tensor(image: Image.Image) -> Tensor:
    """A PIL image ('L' or 'RGB') -> float32 [C, H, W] in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return to_signed(torch.from_numpy(array.copy()).permute(2, 0, 1))


def resize_crop(
    image: Image.Image, size: int, crop: Literal["center", "random"] = "center"
) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic, antialiased) and crop a size × size square,
    centred or at a uniformly random offset (drawn with torch's global generator)."""
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    if crop == "center":
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left = int(torch.randint(width - size + 1, ()))
        top = int(torch.randint(height - size + 1, ()))
    return image.crop((left, top, left + size, top + size))


def random_hflip(image: Tensor) -> Tensor:
    """Mirror [C, H, W] left-right with probability 1/2 (torch's global generator)."""
    return image.flip(-1) if bool(torch.rand(()) < 0.5) else image
