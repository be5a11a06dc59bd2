"""Image transforms shared by the dataset plugins: uint8 arrays and PIL images to float
tensors in [-1, 1], square resize-and-crop, random horizontal flip, and reduced-size JPEG
decoding (``draft_jpeg``)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_signed(pixels: Tensor) -> Tensor:
    """uint8 values in [0, 255] -> float32 in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def array_to_tensor(array: np.ndarray) -> Tensor:
    """A uint8 [H, W] or [H, W, C] array -> float32 [C, H, W] in [-1, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    return to_signed(torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1))


def pil_to_tensor(image: Image.Image) -> Tensor:
    """A PIL image ('L' or 'RGB') -> float32 [C, H, W] in [-1, 1]."""
    return array_to_tensor(np.asarray(image, dtype=np.uint8))


def draft_jpeg(image: Image.Image, mode: str, size: int) -> None:
    """Before decoding, ask a JPEG for the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side
    is still >= ``size`` (PIL's ``Image.draft``): a 512² AFHQ file needed at 64² decodes ~8×
    faster at 64². Pixels differ slightly from a full decode; other formats are untouched."""
    width, height = image.size
    short = min(width, height)
    if image.format != "JPEG" or short <= size:
        return
    # PIL picks scale s <= min(width // w, height // h), so ceil(side / s) >= the request
    image.draft(mode, (math.ceil(width * size / short), math.ceil(height * size / short)))


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic, antialiased), keeping the aspect ratio."""
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def crop_offset(
    width: int, height: int, size: int, crop: Literal["center", "random"] = "center"
) -> tuple[int, int]:
    """(left, top) of a size × size square in a width × height image: centred, or uniformly
    random (drawn with torch's global generator, left then top)."""
    if crop == "center":
        return (width - size) // 2, (height - size) // 2
    left = int(torch.randint(width - size + 1, ()))
    return left, int(torch.randint(height - size + 1, ()))


def resize_crop(
    image: Image.Image, size: int, crop: Literal["center", "random"] = "center"
) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic, antialiased) and crop a size × size square,
    centred or at a uniformly random offset (drawn with torch's global generator)."""
    image = resize_shorter(image, size)
    left, top = crop_offset(image.width, image.height, size, crop)
    return image.crop((left, top, left + size, top + size))


def random_hflip(image: Tensor) -> Tensor:
    """Mirror [C, H, W] left-right with probability 1/2 (torch's global generator)."""
    return image.flip(-1) if bool(torch.rand(()) < 0.5) else image
