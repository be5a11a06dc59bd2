"""The Python API: corediff.train(recipe | pipeline) -> corediff.load -> pipeline.sample /
restore; a pipeline composed in Python trains, is saved as composed and loads back as trained
(or the swap is refused with the recipe's sentence); corediff.create takes config objects;
samples follow the seed and the labels."""

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


def _swap(pipeline, kind, name, **config):
    return corediff.create(kind, name, degradation=pipeline.degradation,
                           parameterization=pipeline.parameterization, **config)


def test_components_swapped_in_python_are_what_is_trained_saved_and_loaded(tmp_path):
    built = corediff.build(corediff.load_recipe(QUICK, TINY))
    built.sampler = _swap(built, "sampler", "ddpm", steps=4)
    built.guidance = _swap(built, "guidance", "cfg_rescale", scale=3.0, phi=0.5)
    pipeline = built.replace(loss_weighting=_swap(built, "loss_weighting", "simple"))
    assert pipeline.recipe.diffusion.sampler == pipeline.sampler.config
    trained = corediff.train(pipeline, run_dir=tmp_path / "swapped")
    loaded = corediff.load(tmp_path / "swapped", which="last")
    for kind in ("sampler", "guidance", "loss_weighting", "parameterization", "degradation"):
        ours, theirs = getattr(pipeline, kind), getattr(loaded, kind)
        assert type(theirs) is type(ours) and theirs.config == ours.config, kind
    assert trained.recipe == loaded.recipe == pipeline.recipe
    assert loaded.generate(2, seed=0).nfe == 4  # ddpm's 4 steps, not the recipe's ddim 5


def test_a_swap_a_recipe_refuses_is_refused_with_its_sentence(tmp_path):
    from corediff.registry import registry

    built = corediff.build(corediff.load_recipe(QUICK, TINY))
    edm = registry("loss_weighting").get("edm")  # the class itself: no check at construction
    pipeline = built.replace(loss_weighting=edm(
        edm.Config(), degradation=built.degradation, parameterization=built.parameterization))
    with pytest.raises(corediff.ConfigError) as from_file:
        corediff.load_recipe(QUICK, [*TINY, "diffusion.loss_weighting.type=edm"])
    sentence = str(from_file.value).splitlines()[1].strip()
    assert sentence.startswith("loss_weighting 'edm' [diffusion.loss_weighting] needs a "
                               "degradation that provides 'sigma_time'")
    for start in (lambda: corediff.train(pipeline, run_dir=tmp_path / "refused"),
                  lambda: pipeline.sample(2)):
        with pytest.raises(corediff.ConfigError) as composed:
            start()
        assert str(composed.value).splitlines()[1:] == [f"  {sentence}"]
    assert not (tmp_path / "refused").exists()


def test_a_component_wired_to_another_pipelines_parts_is_refused(tmp_path):
    pipeline = corediff.build(corediff.load_recipe(QUICK, TINY))
    alike = corediff.create("degradation", pipeline.degradation.config,
                            schedule=corediff.create("schedule", pipeline.schedule.config))
    pipeline.sampler = corediff.create("sampler", "ddpm", degradation=alike,
                                       parameterization=pipeline.parameterization)
    assert pipeline.recipe.diffusion.sampler.type == "ddpm"  # built alike: rebuilt the same
    other = corediff.create("degradation", "gaussian",
                            schedule=corediff.create("schedule", "linear", steps=100))
    pipeline.sampler = corediff.create("sampler", "ddpm", degradation=other,
                                       parameterization=pipeline.parameterization)
    with pytest.raises(corediff.ConfigError, match=r"pipeline.sampler 'ddpm' was built with a "
                       r"degradation other than pipeline.degradation"):
        pipeline.sample(2)


def test_create_takes_a_config_object_and_refuses_what_a_recipe_refuses():
    schedule = corediff.create("schedule", "cosine", steps=100)
    gaussian = corediff.create("degradation", "gaussian", schedule=schedule)
    v = corediff.create("parameterization", "v", degradation=gaussian)
    ddim = corediff.create("sampler", "ddim", degradation=gaussian, parameterization=v, steps=9)
    again = corediff.create("sampler", ddim.config, degradation=gaussian, parameterization=v,
                            eta=0.5)
    assert type(again) is type(ddim) and again.config == ddim.config.model_copy(
        update={"eta": 0.5})
    table = corediff.create("sampler", {"type": "ddim", "steps": 3}, degradation=gaussian,
                            parameterization=v)
    assert table.config.steps == 3
    with pytest.raises(corediff.ConfigError, match=r"sampler 'ddim': invalid recipe\n  steps:"):
        corediff.create("sampler", ddim.config, degradation=gaussian, parameterization=v,
                        steps=0)
    blur = corediff.create("degradation", "blur",
                           schedule=corediff.create("schedule", "blur_constant", steps=10))
    x0 = corediff.create("parameterization", "x0", degradation=blur)
    with pytest.raises(corediff.ConfigError) as refused:
        corediff.create("sampler", ddim.config, degradation=blur, parameterization=x0)
    with pytest.raises(corediff.ConfigError) as from_file:
        corediff.load_recipe(QUICK, [*TINY, "diffusion.schedule.type=blur_constant",
                                     "diffusion.degradation.type=blur"])
    sentence = str(refused.value).splitlines()[1]
    assert sentence.startswith("  sampler 'ddim' [diffusion.sampler] needs a degradation that "
                               "provides '") and sentence.endswith(
        "but degradation 'blur' [diffusion.degradation] provides blur, deterministic.")
    assert sentence in str(from_file.value).splitlines()  # the sentence a recipe file gets
    with pytest.raises(corediff.ArgumentTypeError, match="a plugin name, a config object"):
        corediff.create("sampler", 3, degradation=gaussian, parameterization=v)
