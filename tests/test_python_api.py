"""The Python API: corediff.train(recipe | pipeline) -> corediff.load -> pipeline.sample /
restore; a pipeline composed in Python trains; samples follow the seed and the labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import corediff

QUICK = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
TINY = ["train.steps=6", "train.batch_size=8", "train.log_every=3", "train.checkpoint_every=6",
        "train.warmup_steps=2", "sample.n=4", "sample.batch_size=4", "run.device='cpu'",
        "diffusion.sampler.steps=5", "data.image_size=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("api") / "run"
    pipeline = corediff.train(QUICK, run_dir=run_dir, overrides=TINY)
    return run_dir, pipeline


def test_train_returns_the_loaded_last_checkpoint(trained):
    run_dir, pipeline = trained
    assert (run_dir / "checkpoints" / "last" / "state.json").exists()
    again = corediff.load(run_dir, which="last")
    for a, b in zip(pipeline.model.state_dict().values(), again.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert not again.model.training


def test_sample_follows_seed_labels_and_steps(trained):
    _, pipeline = trained
    first = pipeline.sample(4, labels=3, seed=1)
    assert first.shape == (4, 1, 8, 8) and first.device.type == "cpu"
    assert torch.equal(first, pipeline.sample(4, labels=3, seed=1))
    assert not torch.equal(first, pipeline.sample(4, labels=3, seed=2))
    assert not torch.equal(first, pipeline.sample(4, labels=5, seed=1))
    generated = pipeline.generate(4, steps=3, seed=1)
    assert generated.nfe == 3 and pipeline.generate(4, seed=1).nfe == 5
    with pytest.raises(corediff.ConfigError, match="label = 12 is not a class of the data"):
        pipeline.sample(2, labels=12)


def test_restore_returns_degraded_direct_and_sample(trained):
    _, pipeline = trained
    x0 = torch.zeros(2, 1, 8, 8)
    degraded, direct, sample = pipeline.restore(x0, 400, seed=0)
    assert degraded.shape == direct.shape == sample.shape == x0.shape
    assert (degraded - x0).abs().mean() > 0.1
    with pytest.raises(corediff.ConfigError, match="t must be in 1..1000"):
        pipeline.restore(x0, 0)


def test_a_pipeline_composed_in_python_trains(tmp_path):
    recipe = corediff.load_recipe(QUICK, TINY)
    pipeline = corediff.build(recipe)
    pipeline.guidance = corediff.create(
        "guidance", "none", degradation=pipeline.degradation,
        parameterization=pipeline.parameterization)
    trained = corediff.train(pipeline, run_dir=tmp_path / "composed")
    assert trained.recipe.train.steps == 6
    assert (tmp_path / "composed" / "metrics.csv").exists()


def test_public_types_are_exported():
    for name in ("DataSpec", "Pipeline", "Denoiser", "Prediction", "SampleResult", "Step",
                 "train", "load", "KINDS"):
        assert getattr(corediff, name) is not None


def test_progress_callback_sees_every_step_of_every_batch(trained):
    _, pipeline = trained
    seen: list[tuple[int, int]] = []
    pipeline.generate(6, batch_size=4, callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(5)] * 2
