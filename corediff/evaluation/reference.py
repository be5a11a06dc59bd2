"""Scoring samples against a reference batch (``corediff eval --reference FILE.npz``).

The reference is an ``.npz`` in the layout of the ADM evaluation suite (guided-diffusion's
``evaluations/evaluator.py`` and its published reference batches, and what ``corediff sample
--format npz`` writes): ``arr_0``, uint8 [N, H, W, C] with C the run's channels (other arrays
are ignored). Its header is read before its data, so a wrong dtype, shape or a too large
array is refused without loading it. The metrics that apply to the run's data (declared by
the dataset, :func:`corediff.evaluation.report.metric_families`):

* ``digits_fd``: the Fréchet distance in the digits classifier's feature space
  (:mod:`.digits_metric`) between the samples and the reference, for digits data;
* ``inception``: FID, KID, IS, precision/recall (:mod:`.inception`) between the samples and
  the reference, for natural images, when torch-fidelity and the Inception weights are
  present, else ``{"unavailable": <how to get them>}``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from corediff.errors import ConfigError, CorediffError

#: Largest reference array read (bytes): 2 GiB, e.g. 50 000 RGB images of 64×64 (600 MB).
MAX_REFERENCE_BYTES = 2 << 30


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError(f"--reference '{path}' is not a reference batch in the ADM layout "
                       f"(arr_0: uint8 [N, H, W, C]): {why}")


def load_reference(path: str | Path, channels: int) -> Tensor:
    """The reference images as float32 [N, C, H, W] in [-1, 1] (x ↦ x / 127.5 − 1)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--reference '{path}' is not a file")
    try:
        with zipfile.ZipFile(path) as archive:
            if "arr_0.npy" not in archive.namelist():
                raise _refuse(path, "it holds no arr_0")
            with archive.open("arr_0.npy") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(handle)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise _refuse(path, f"{' '.join(str(exc).split())[:200] or type(exc).__name__}"
                      ) from None
    if dtype != np.uint8:
        raise _refuse(path, f"arr_0 is {dtype}, not uint8")
    if len(shape) != 4 or shape[3] != channels or shape[1] < 1 or shape[2] < 1:
        raise _refuse(path, f"arr_0 has shape {tuple(shape)}, not [N, H, W, {channels}]")
    if shape[0] < 2:
        raise _refuse(path, f"arr_0 holds {shape[0]} image(s); the metrics need at least 2")
    if int(np.prod(shape)) > MAX_REFERENCE_BYTES:
        raise _refuse(path, f"arr_0 has shape {tuple(shape)}, over the "
                      f"{MAX_REFERENCE_BYTES >> 30} GiB this reads")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            pixels = arrays["arr_0"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _refuse(path, ' '.join(str(exc).split())[:200]) from None
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
    return images.float() / 127.5 - 1


def reference_metrics(samples: Tensor, reference: Tensor, families: frozenset[str], *,
                      image_size: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The metrics of the module docstring for samples and reference, both [-1, 1] NCHW."""
    report: dict[str, Any] = {"n": len(reference)}
    if "digits_classifier" in families:
        from corediff.evaluation.digits_metric import DigitsMetric
        from corediff.evaluation.frechet import frechet_distance_of

        metric = DigitsMetric(image_size)
        report["digits_fd"] = frechet_distance_of(metric.embed(samples)[0],
                                                  metric.embed(reference)[0])
    if "natural_images" in families:
        from corediff.evaluation.inception import inception_metrics

        try:
            report["inception"] = inception_metrics(samples, reference, device)
        except CorediffError as exc:
            report["inception"] = {"unavailable": str(exc)}
    return report
