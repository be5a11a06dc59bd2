"""Evaluation metrics chosen by declaration (``Dataset.metrics``, ``Dataset.held_out_config``,
``restoration_applies``), and the memorization metric against a brute-force loop."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import pytest
import torch

from corediff.builder import build
from corediff.errors import CorediffError
from corediff.evaluation import report
from corediff.evaluation.memorization import memorization_metrics, nearest_distances
from corediff.interfaces import Dataset
from corediff.recipe import parse_recipe
from corediff_plugins.datasets.digits import DigitsConfig, DigitsDataset
from corediff_plugins.datasets.image_folder import ImageFolderConfig, ImageFolderDataset
from corediff_plugins.datasets.sample_patches import SamplePatchesConfig, SamplePatchesDataset

RECIPE = """
[data]
{data}

[model]
type = "unet"
preset = "tiny"
attention_resolutions = []

[diffusion.schedule]
{schedule}

[diffusion.degradation]
type = "{degradation}"

[diffusion.parameterization]
type = "{parameterization}"

[diffusion.loss_weighting]
type = "simple"

[diffusion.sampler]
{sampler}

[diffusion.prior]
{prior}

[run]
device = "cpu"
"""

DATA = {
    "digits": 'type = "digits"\nimage_size = 8\nclass_labels = false',
    "sample_patches": 'type = "sample_patches"\nimage_size = 8\ncount = 24',
}
METHODS = {
    "gaussian": dict(schedule='type = "linear"\nsteps = 50', degradation="gaussian",
                     parameterization="eps", sampler='type = "ddim"\nsteps = 2',
                     prior='type = "normal"'),
    "svd": dict(schedule='type = "rank_linear"\nsteps = 8', degradation="svd",
                parameterization="residual", sampler='type = "cold_improved"\nsteps = 2',
                prior='type = "partial"\nstart = 0.5'),
}


def pipeline_for(data: str, method: str) -> Any:
    text = RECIPE.format(data=DATA[data], **METHODS[method])
    torch.manual_seed(0)
    pipeline = build(parse_recipe(tomllib.loads(text)))
    if method == "svd":  # the partial prior starts from training images, as training fits it
        dataset = pipeline.dataset
        pipeline.prior.fit(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    return pipeline


def test_datasets_declare_metric_families_and_held_out_images() -> None:
    assert Dataset.metrics == frozenset()
    assert DigitsDataset.metrics == {"digits_classifier"}
    assert ImageFolderDataset.metrics == SamplePatchesDataset.metrics == {"natural_images"}
    for cls in (DigitsDataset, ImageFolderDataset, SamplePatchesDataset):
        assert cls.metrics <= report.DATASET_METRICS
    config = DigitsConfig(image_size=12, split="train", class_labels=False)
    held_out = DigitsDataset.held_out_config(config)
    assert held_out == config.model_copy(update={"split": "test"})
    assert config.split == "train"  # not modified in place
    assert SamplePatchesDataset.held_out_config(SamplePatchesConfig()) is None
    assert ImageFolderDataset.held_out_config(ImageFolderConfig(root="anywhere")) is None


@pytest.mark.parametrize(("data", "method", "expected"), [
    ("digits", "gaussian", {"digits_classifier", "memorization"}),
    ("digits", "svd", {"digits_classifier", "memorization", "restoration"}),
    ("sample_patches", "gaussian", {"natural_images", "memorization"}),
    ("sample_patches", "svd", {"natural_images", "memorization", "restoration"}),
])
def test_metric_families_follow_the_declarations(data: str, method: str,
                                                 expected: set[str]) -> None:
    pipeline = pipeline_for(data, method)
    assert report.metric_families(pipeline) == expected
    assert report.restoration_applies(pipeline.degradation) == (method != "gaussian")


def test_undeclared_and_unknown_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = pipeline_for("sample_patches", "gaussian")
    monkeypatch.setattr(SamplePatchesDataset, "metrics", frozenset())
    assert report.metric_families(pipeline) == {"memorization"}
    monkeypatch.setattr(SamplePatchesDataset, "metrics", frozenset({"natural_image"}))
    with pytest.raises(CorediffError, match=r"unknown metrics \['natural_image'\]"):
        report.metric_families(pipeline)


def test_real_images_come_from_the_declared_held_out_split() -> None:
    pipeline = pipeline_for("digits", "gaussian")
    images, labels = report.real_images(pipeline, 5, seed=3)
    test = DigitsDataset(DigitsConfig(image_size=8, split="test", class_labels=False))
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(3))[:5]
    torch.testing.assert_close(images, test.images[pick])
    patches = pipeline_for("sample_patches", "gaussian")
    images, _ = report.real_images(patches, 30, seed=0)  # no held-out split: the training set
    assert images.shape == (24, 3, 8, 8)


@pytest.mark.parametrize(("data", "method"), [("digits", "gaussian"),
                                              ("sample_patches", "svd")])
def test_evaluate_computes_exactly_the_declared_families(
    data: str, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}

    class FakeDigitsMetric:
        def __init__(self, image_size: int) -> None:
            calls["digits_size"] = image_size

        def __call__(self, images: torch.Tensor, labels: Any = None) -> dict[str, float]:
            calls["digits"] = images.shape
            return {"fd": 1.0}

    def fake_inception(generated: torch.Tensor, real: torch.Tensor, device: Any) -> dict:
        calls["inception"] = (generated.shape, real.shape)
        return {"fid": 2.0}

    monkeypatch.setattr(report, "DigitsMetric", FakeDigitsMetric)
    monkeypatch.setattr(report, "inception_metrics", fake_inception)
    pipeline = pipeline_for(data, method)
    result = report.evaluate(pipeline, pipeline.model, n=4, seed=0)
    memorization = result["memorization"]
    assert 0 < memorization["min_distance"] <= memorization["mean_distance"] <= 2  # clamped
    assert 0 <= memorization["fraction_close"] <= 1
    if data == "digits":
        assert calls == {"digits_size": 8, "digits": (4, 1, 8, 8)}
        assert result["digits"] == {"fd": 1.0} and "inception" not in result
        assert memorization["held_out_mean_distance"] > 0  # the test split vs training
    else:
        assert calls == {"inception": ((4, 3, 8, 8), (4, 3, 8, 8))}
        assert result["inception"] == {"fid": 2.0} and "digits" not in result
        assert "held_out_mean_distance" not in memorization
    assert ("restoration" in result) == (method == "svd")


def _brute_force(samples: torch.Tensor, training: torch.Tensor) -> tuple[list[float], list[int]]:
    distances, indices = [], []
    for sample in samples:
        rmse = [float(((sample.double() - image.double()) ** 2).mean().sqrt())
                for image in training]
        best = min(range(len(rmse)), key=rmse.__getitem__)
        distances.append(rmse[best])
        indices.append(best)
    return distances, indices


def test_memorization_matches_a_brute_force_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(11)
    training = (torch.rand(37, 3, 5, 5, generator=generator) * 2 - 1) * 0.9
    samples = torch.rand(13, 3, 5, 5, generator=generator) * 2 - 1
    samples[4] = training[20]  # an exact copy
    samples[7] = training[3] + 0.01  # a near copy (RMSE 0.01)
    expected, expected_index = _brute_force(samples, training)
    monkeypatch.setattr("corediff.evaluation.memorization.REFERENCE_BATCH", 8)  # 5 batches
    distances, indices = nearest_distances(samples, training)
    torch.testing.assert_close(distances, torch.tensor(expected, dtype=torch.float64))
    assert indices.tolist() == expected_index and indices[4] == 20 and indices[7] == 3
    assert distances[4] < 1e-6 and distances[7] == pytest.approx(0.01, abs=1e-6)
    streamed = nearest_distances(samples, (batch for batch in training.split(10)))
    torch.testing.assert_close(streamed[0], distances)
    assert torch.equal(streamed[1], indices)

    held_out = torch.rand(6, 3, 5, 5, generator=generator) * 2 - 1
    metrics = memorization_metrics(samples, training.split(9), held_out=held_out,
                                   threshold=0.05)
    assert metrics["mean_distance"] == pytest.approx(sum(expected) / 13, rel=1e-12)
    assert metrics["min_distance"] == pytest.approx(min(expected), abs=1e-6)
    assert metrics["fraction_close"] == pytest.approx(2 / 13)
    held, _ = _brute_force(held_out, training)
    assert metrics["held_out_mean_distance"] == pytest.approx(sum(held) / 6, rel=1e-12)
    assert math.isfinite(metrics["threshold"])
    loud = memorization_metrics(samples * 100, training)  # samples are clamped, as saved
    clamped, _ = _brute_force((samples * 100).clamp(-1, 1), training)
    assert loud["mean_distance"] == pytest.approx(sum(clamped) / 13, rel=1e-12)


def test_memorization_refuses_mismatched_or_empty_references() -> None:
    samples = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="reference images have 9 values, samples 16"):
        nearest_distances(samples, torch.zeros(3, 1, 3, 3))
    with pytest.raises(ValueError, match="no reference images"):
        nearest_distances(samples, [])
