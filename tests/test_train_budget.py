"""train.max_minutes: a wall-clock budget of training, honoured across resumes, with the
steps actually done recorded (a study compares methods at equal time with it); and a fitted
component chosen only at sampling time (``--set diffusion.prior=…``) is fitted on the
training images when the checkpoint is opened, as training would have fitted it."""

from __future__ import annotations

from pathlib import Path

import torch

from corediff.engine import checkpoint, distributed
from corediff.engine.loading import open_checkpoint
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import fit_images, run_training
from corediff.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "tests" / "data" / "study" / "base.toml"
SVD = ROOT / "studies" / "recipes" / "svd_digits16.toml"


def _train(run: Path, minutes: float, *, resume: bool):
    recipe = load_recipe(BASE, ["train.steps=100000", "train.log_every=1",
                                f"train.max_minutes={minutes}"])
    return run_training(recipe, RunDir(run), distributed.setup("cpu"), resume=resume)


def test_the_budget_stops_training_and_holds_across_resumes(tmp_path, capsys):
    trainer = _train(tmp_path, 0.02, resume=False)
    state = checkpoint.load_state(tmp_path / "checkpoints" / "last")
    assert 0 < state["step"] == trainer.step < 100000
    assert 1.2 <= state["train_seconds"] < 1.2 + 5  # stops at the first step past 1.2 s
    assert "train.max_minutes = 0.02 reached at step" in capsys.readouterr().err
    again = _train(tmp_path, 0.02, resume=True)  # the budget is spent: no step more
    assert again.step == state["step"]
    longer = _train(tmp_path, 0.04, resume=True)  # a larger budget continues the run
    resumed = checkpoint.load_state(tmp_path / "checkpoints" / "last")
    assert longer.step > state["step"] and 2.4 <= resumed["train_seconds"] < 2.4 + 5


def test_a_prior_chosen_at_sampling_time_is_fitted_when_opened(tmp_path):
    recipe = load_recipe(SVD, ["train.steps=2", "train.batch_size=8", "train.warmup_steps=1"])
    run_training(recipe, RunDir(tmp_path), distributed.setup("cpu"), resume=False)
    loaded = open_checkpoint(tmp_path, "last",
                             ["diffusion.prior={type='degraded_gmm', fraction=0.7}"])
    prior = loaded.pipeline.prior
    reference = load_recipe(SVD, ["train.steps=2", "train.batch_size=8", "train.warmup_steps=1",
                                  "diffusion.prior={type='degraded_gmm', fraction=0.7}"])
    from corediff.builder import build

    fitted = build(reference)
    images = fit_images(fitted)
    for component in fitted.components().values():
        component.fit(images)
    for key, value in fitted.prior.extra_state().items():
        assert torch.equal(prior.extra_state()[key], value), key
