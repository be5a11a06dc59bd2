"""scikit-learn's handwritten digits (UCI "Optical Recognition of Handwritten Digits", Alpaydin
& Kaynak 1998): 1797 grey 8×8 images with 17 levels (0..16), bundled with scikit-learn, so
no download. Pixels map to [-1, 1] as ``v / 8 − 1`` and are resized bilinearly (antialiased)
to ``image_size``. The split is fixed: ``train`` is the first 1500 images in scikit-learn's
order, ``test`` the remaining 297, ``all`` every one. This is the quickstart's dataset.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from sklearn.datasets import load_digits
from torch import Tensor, nn

from corediff.config import ComponentConfig, ImageSize
from corediff.interfaces import Dataset, DataSpec

TRAIN_SIZE = 1500
MAX_LEVEL = 16.0


class DigitsConfig(ComponentConfig):
    type: Literal["digits"] = "digits"
    image_size: ImageSize = Field(16, description="Side the 8×8 digits are resized to.")
    split: Literal["train", "test", "all"] = Field(
        "train", description="'train': first 1500 images, 'test': the other 297, 'all': 1797."
    )
    class_labels: bool = Field(True, description="Return the digit (0-9) as label, else -1.")


class DigitsDataset(Dataset):
    """The 8×8 digits as 1-channel images of side ``image_size`` in [-1, 1]."""

    Config = DigitsConfig
    metrics = frozenset({"digits_classifier"})

    @classmethod
    def held_out_config(cls, config: ComponentConfig) -> DigitsConfig:
        """The ``test`` split (the 297 images the classifier metric never trains on)."""
        return config.model_copy(update={"split": "test"})

    @classmethod
    def fixed_items(cls, config: ComponentConfig) -> bool:
        """Every item is a fixed digit (no augmentation)."""
        return True

    @classmethod
    def describe(cls, config: ComponentConfig) -> DataSpec:
        """One channel, the config's size, 10 classes when class_labels."""
        return DataSpec(1, config.image_size, 10 if config.class_labels else None)

    def __init__(self, config: DigitsConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        digits = load_digits()
        rows = {"train": slice(0, TRAIN_SIZE), "test": slice(TRAIN_SIZE, None), "all": slice(None)}
        pixels = torch.from_numpy(digits.images[rows[cfg.split]]).float()[:, None]
        images = pixels * (2.0 / MAX_LEVEL) - 1.0
        if cfg.image_size != images.shape[-1]:
            images = nn.functional.interpolate(
                images, size=cfg.image_size, mode="bilinear", antialias=True, align_corners=False
            ).clamp(-1.0, 1.0)
        self.images: Tensor = images.contiguous()
        self.labels: Tensor = torch.from_numpy(digits.target[rows[cfg.split]]).long()
        self.channels = 1
        self.image_size = cfg.image_size
        self.num_classes = 10 if cfg.class_labels else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        label = int(self.labels[index]) if self.num_classes is not None else -1
        return self.images[index], label
