"""The Inception metric path end to end, offline: a weights file in the real format (the state
dict of torch-fidelity's FID Inception-v3, here with seeded random weights) is written where
``load_inception`` looks for it (``$COREDIFF_CACHE``), then ``inception_metrics`` and
``corediff eval`` on a tiny natural-image run compute finite FID/KID/IS/precision/recall.

Random weights make the numbers meaningless as quality scores but exercise every step the real
file does: finding and safety-loading the file, building the network, 299×299 resizing,
feature extraction and the statistics. Inception on CPU costs about 0.3 s an image, so the
sets are tiny (4 images: the least precision/recall with k = 3 accepts)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from corediff.cli import main
from corediff.evaluation import inception
from corediff_plugins.datasets.sample_patches import SamplePatchesConfig, SamplePatchesDataset

torch_fidelity = pytest.importorskip("torch_fidelity", reason="the 'metrics' extra")


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of torch-fidelity's FeatureExtractorInceptionV3 with seeded random
    weights (He-normal convolutions, so activations keep their scale through the depth)."""
    module = torch_fidelity.feature_extractor_inceptionv3
    with pytest.MonkeyPatch.context() as patch:  # build the network without any weights file
        patch.setattr(module, "load_state_dict_from_url", lambda *args, **kwargs: None)
        patch.setattr(module.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, state: None)
        torch.manual_seed(seed)
        network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        for layer in network.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    return network.state_dict()


@pytest.fixture(scope="module", autouse=True)
def weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private $COREDIFF_CACHE holding a random-weights Inception file."""
    cache = tmp_path_factory.mktemp("cache")
    path = cache / inception.WEIGHTS_FILE
    torch.save(random_inception_state(), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COREDIFF_CACHE", str(cache))
        yield path


def patches(seed: int, n: int = 4, size: int = 16) -> torch.Tensor:
    dataset = SamplePatchesDataset(SamplePatchesConfig(image_size=size, count=n, seed=seed))
    return torch.stack([dataset[i][0] for i in range(n)])


def test_the_weights_file_is_found_and_loads(weights: Path) -> None:
    assert inception.weights_candidates()[0] == weights
    network = inception.load_inception()
    state = torch.load(weights, weights_only=True)
    assert network.state_dict().keys() == state.keys()
    torch.testing.assert_close(network.fc.weight, state["fc.weight"])
    pool, logits = inception.inception_features(network, patches(0, n=2))
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert pool.std() > 1e-3 and torch.isfinite(logits).all()


def test_inception_metrics_of_a_set_against_itself_and_another() -> None:
    a, b = patches(0), patches(1)
    same = inception.inception_metrics(a, a.clone())
    other = inception.inception_metrics(a, b)
    for metrics in (same, other):
        assert set(metrics) == {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall"}
        assert all(math.isfinite(value) for value in metrics.values()), metrics
        assert metrics["is"] >= 1 - 1e-9
    assert other["fid"] > 0
    assert abs(same["fid"]) <= 1e-6 * other["fid"]
    assert same["precision"] == same["recall"] == 1.0


TINY_PATCHES_RECIPE = """
[data]
type = "sample_patches"
image_size = 8
count = 32

[model]
type = "unet"
preset = "tiny"
attention_resolutions = []

[diffusion.schedule]
type = "linear"
steps = 50

[diffusion.degradation]
type = "gaussian"

[diffusion.parameterization]
type = "eps"

[diffusion.loss_weighting]
type = "simple"

[diffusion.sampler]
type = "ddim"
steps = 2

[diffusion.prior]
type = "normal"

[train]
steps = 2
batch_size = 8
warmup_steps = 1
log_every = 2
checkpoint_every = 2

[run]
device = "cpu"
"""


def test_eval_command_reports_inception_metrics_for_natural_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "patches.toml"
    recipe.write_text(TINY_PATCHES_RECIPE, encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["train", str(recipe), "--run-dir", str(run_dir)]) == 0
    assert main(["eval", str(run_dir), "--n", "4"]) == 0
    assert "fid:" in capsys.readouterr().out
    report = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    scores = report["inception"]
    assert "unavailable" not in scores and scores["fid"] > 0
    assert all(math.isfinite(value) for value in scores.values()), scores
    assert 0 < report["memorization"]["mean_distance"] <= 2
    assert "digits" not in report and "restoration" not in report
