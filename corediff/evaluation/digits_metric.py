"""A download-free quality metric for the embedded 8×8 digits: a small classifier's features.

FID's idea (Heusel et al. 2017) with a feature network that fits the data: a two-layer conv
net trained deterministically on the ``digits`` dataset's training split (the first 1500
images, at their native 8×8, with small shifts and resize round trips), cached as
safetensors under ``$COREDIFF_CACHE`` (default ``~/.cache/corediff``). Generated images of
any side are resized to 8×8 (bilinear, antialiased) and compared with the held-out split
passed through the same resize:

* ``fd``: Fréchet distance in the 64-d penultimate feature space (the "FID" of digits);
* ``confidence``: mean max softmax probability (sharp, recognisable digits score near 1);
* ``class_histogram``: how many samples the classifier assigns to each digit 0..9;
* ``class_entropy``: entropy in bits of that histogram (log2 10 ≈ 3.32 when every digit
  appears equally; low when generation collapses onto a few digits);
* ``label_accuracy``: share classified as their conditioning label (class-conditional runs).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from torch.nn import functional as F

from corediff.evaluation.frechet import frechet_distance, gaussian_stats
from corediff.maths.noise import randint
from corediff.registry import registry

NATIVE_SIZE, NUM_CLASSES, FEATURES = 8, 10, 64
#: Everything that defines the cached weights; changing any of it changes the file name.
TRAINING = {"version": 1, "epochs": 20, "batch_size": 50, "lr": 2e-3, "seed": 0, "shift": 1,
            "round_trips": (16, 32)}


def cache_dir() -> Path:
    """``$COREDIFF_CACHE`` or ``~/.cache/corediff``."""
    return Path(os.environ.get("COREDIFF_CACHE", "~/.cache/corediff")).expanduser()


def digits_images(split: str, image_size: int = NATIVE_SIZE) -> tuple[Tensor, Tensor]:
    """Images [N, 1, S, S] in [-1, 1] and labels [N] of the ``digits`` dataset plugin."""
    cls = registry("dataset").get("digits")
    dataset = cls(cls.Config(image_size=image_size, split=split))
    return dataset.images, dataset.labels


class DigitsClassifier(nn.Module):
    """conv(1→32) → conv(32→64) → 2×2 max-pool → linear(1024→64) = features → linear(64→10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * (NATIVE_SIZE // 2) ** 2, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, NUM_CLASSES)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features [B, 64], logits [B, 10]) for 8×8 images in [-1, 1]."""
        features = self.features(x)
        return features, self.head(features)


def to_native(images: Tensor) -> Tensor:
    """Images [N, 1, S, S] resized to 8×8 (bilinear, antialiased), clamped to [-1, 1]."""
    x = images.float().clamp(-1, 1)
    if x.shape[-1] == NATIVE_SIZE:
        return x
    return F.interpolate(x, size=NATIVE_SIZE, mode="bilinear", antialias=True,
                         align_corners=False)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """One random round trip 8 → S → 8 (S in ``round_trips``, or none), as evaluating images
    of side S does, then a translation by up to ``shift`` pixels; drawn once per batch."""
    sides, pixels = TRAINING["round_trips"], TRAINING["shift"]
    choice = int(randint(0, len(sides) + 1, (), generator, "cpu"))
    if choice < len(sides):
        x = to_native(F.interpolate(x, size=sides[choice], mode="bilinear", antialias=True,
                                    align_corners=False))
    dy, dx = randint(0, 2 * pixels + 1, (2,), generator, "cpu").tolist()
    padded = F.pad(x, (pixels,) * 4, value=-1.0)  # background is -1
    return padded[..., dy:dy + NATIVE_SIZE, dx:dx + NATIVE_SIZE]


def train_classifier() -> DigitsClassifier:
    """Train on the digits training split with Adam and augmentation (deterministic).

    Runs single-threaded: these tiny convolutions are faster so, and thread contention
    on a busy CPU would otherwise slow training tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train()
    finally:
        torch.set_num_threads(threads)


def _train() -> DigitsClassifier:
    cfg = TRAINING
    torch.manual_seed(cfg["seed"])
    generator = torch.Generator().manual_seed(cfg["seed"])
    images, labels = digits_images("train")
    model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg["epochs"])
    for _ in range(cfg["epochs"]):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(cfg["batch_size"]):
            x = _augment(images[batch], generator)
            loss = F.cross_entropy(model(x)[1], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def load_classifier() -> DigitsClassifier:
    """The cached classifier, trained and cached first when missing."""
    key = hashlib.sha256(repr(sorted(TRAINING.items())).encode()).hexdigest()[:12]
    path = cache_dir() / f"digits_classifier-{key}.safetensors"
    if path.is_file():
        model = DigitsClassifier()
        load_model(model, str(path))
        return model.eval()
    from corediff.paths import check_folder

    check_folder("the digits classifier's cache ($COREDIFF_CACHE)", path.parent)
    with torch.enable_grad(), torch.random.fork_rng():
        model = train_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)
    return model


class DigitsMetric:
    """Scores generated digits of side ``image_size`` against the held-out split."""

    def __init__(self, image_size: int) -> None:
        self.classifier = load_classifier()
        reference, self.reference_labels = digits_images("test", image_size)
        self.reference_stats = gaussian_stats(self.embed(reference)[0])

    @torch.no_grad()
    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(features [N, 64], class probabilities [N, 10]) of images [N, 1, S, S] in [-1, 1]."""
        features, logits = self.classifier(to_native(images.cpu()))
        return features, logits.softmax(-1)

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> dict[str, object]:
        """The metrics of module docstring for images [N, 1, S, S] (N ≥ 2)."""
        features, probs = self.embed(images)
        confidence, predicted = probs.max(-1)
        histogram = torch.bincount(predicted, minlength=NUM_CLASSES)
        share = histogram[histogram > 0].double() / len(predicted)
        metrics: dict[str, object] = {
            "fd": frechet_distance(*gaussian_stats(features), *self.reference_stats),
            "confidence": float(confidence.mean()),
            "class_histogram": histogram.tolist(),
            "class_entropy": float(-(share * share.log2()).sum()),
        }
        if labels is not None:
            metrics["label_accuracy"] = float((predicted == labels.cpu()).float().mean())
        return metrics
