"""`corediff run / train / sample / degrade` end to end through main(), on tiny CPU settings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytest
import tomli_w
import torch
from PIL import Image
from torch import Tensor

import corediff
from corediff.cli import main
from corediff.config import ComponentConfig
from corediff.engine import checkpoint
from corediff.engine.rundir import read_metrics
from corediff.interfaces import Model
from corediff.registry import registry

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY_SVD = [
    "data.image_size=16", "model.preset='tiny'", "model.attention_resolutions=[]",
    "diffusion.schedule.steps=16", "diffusion.sampler.steps=4", "diffusion.prior.bank_size=8",
    "train.steps=20", "train.batch_size=4", "train.checkpoint_every=10", "train.log_every=5",
    "train.sample_every=10", "train.warmup_steps=2", "train.num_workers=0",
    "train.precision='fp32'", "sample.n=4", "sample.batch_size=4", "run.device='cpu'",
]


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and spinning OpenMP threads
    slow down badly on a CPU shared with other test processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    from corediff_plugins.datasets.sample_patches import write_sample_folder

    root = tmp_path_factory.mktemp("afhq")
    write_sample_folder(root, count=12, size=24)
    return root


@pytest.fixture(scope="module")
def svd_run(image_folder, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("svd_run")
    code = main(["run", str(RECIPES / "svd_afhq.toml"), "--run-dir", str(run_dir),
                 *sets([f"data.root='{image_folder}'", *TINY_SVD])])
    assert code == 0
    return run_dir


def test_svd_afhq_runs_end_to_end(svd_run):
    rows = read_metrics(svd_run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    for name in ("last", "best"):
        state = checkpoint.load_state(svd_run / "checkpoints" / name)
        assert state["data_spec"] == {"channels": 3, "image_size": 16, "num_classes": None}
        assert state["extra"]["prior"]  # the partial prior's image bank, fitted before training
    last, best = (checkpoint.load_state(svd_run / "checkpoints" / n) for n in ("last", "best"))
    assert last["step"] == 20
    assert best["smoothed"] == best["best"] == last["best"] <= last["smoothed"]
    assert (best["step"] == 20) == (last["smoothed"] == last["best"])
    with Image.open(svd_run / "samples.png") as grid:
        assert grid.size == (2 + 2 * 18, 2 + 2 * 18)  # 2×2 grid of 16 px with 2 px padding
    assert (svd_run / "samples" / "step_0000010.png").is_file()
    stored = corediff.load_recipe(svd_run / "recipe.toml")
    assert stored.train.steps == 20 and stored.data.image_size == 16


def test_sample_reproduces_the_run_grid_and_accepts_overrides(svd_run, tmp_path):
    again = tmp_path / "again.png"
    assert main(["sample", str(svd_run), "--out", str(again)]) == 0
    assert again.read_bytes() == (svd_run / "samples.png").read_bytes()

    out = tmp_path / "naive"
    code = main(["sample", str(svd_run / "checkpoints" / "best"), "--n", "3", "--individual",
                 "--trajectory", "--out", str(out), "--set", "diffusion.sampler.type='cold_naive'"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    with Image.open(tmp_path / "naive_trajectory.png") as strip:
        assert strip.size[1] == 2 + 2 * 3 * 18  # rows: x_t and x̂0 for each of 3 samples


def test_sample_refuses_an_incompatible_override(svd_run, capsys):
    code = main(["sample", str(svd_run), "--set", "diffusion.sampler.type='ddim'"])
    assert code == 2
    assert "gaussian" in capsys.readouterr().err
    assert main(["sample", str(svd_run), "--set", "sample.label=3"]) == 2
    assert "the data has no classes" in capsys.readouterr().err


def test_bad_dataset_path_is_named(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    code = main(["train", str(RECIPES / "svd_afhq.toml"), "--run-dir", str(tmp_path / "r"),
                 *sets([f"data.root='{missing}'", *TINY_SVD])])
    assert code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_unreadable_images_are_skipped_with_a_warning(image_folder, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted(image_folder.rglob("*.png"))[:6]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        code = main(["train", str(RECIPES / "svd_afhq.toml"), "--run-dir", str(tmp_path / "r"),
                     *sets([f"data.root='{folder}'", *TINY_SVD, "train.steps=4"])])
    assert code == 0


class NaNAfterConfig(ComponentConfig):
    type: Literal["nan_after"] = "nan_after"
    after: int = 6


class NaNAfter(Model):
    """A 1×1 convolution whose output turns NaN after ``after`` training calls."""

    Config = NaNAfterConfig

    def __init__(self, config=None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.conv = torch.nn.Conv2d(self.in_channels, self.out_channels, 1)
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.calls += self.training
        out = self.conv(x)
        return out * math.nan if self.calls > self.config.after else out


def test_nan_loss_stops_with_training_error_and_keeps_last_checkpoint(tmp_path, capsys):
    corediff.register("model", "nan_after")(NaNAfter)
    try:
        recipe = tmp_path / "nan.toml"
        recipe.write_text(tomli_w.dumps({
            "data": {"type": "digits", "image_size": 8},
            "model": {"type": "nan_after", "after": 6},
            "diffusion": {
                "schedule": {"type": "linear", "steps": 50}, "degradation": {"type": "gaussian"},
                "parameterization": {"type": "eps"}, "loss_weighting": {"type": "simple"},
                "sampler": {"type": "ddim", "steps": 5}, "prior": {"type": "normal"},
            },
            "train": {"steps": 20, "batch_size": 8, "checkpoint_every": 4, "log_every": 2},
            "run": {"device": "cpu"},
        }))
        code = main(["train", str(recipe), "--run-dir", str(tmp_path / "r")])
    finally:
        registry("model").unregister("nan_after")
    assert code == 2
    err = capsys.readouterr().err
    assert "the loss is nan at step 7" in err and "last good checkpoint" in err
    state = checkpoint.load_state(tmp_path / "r" / "checkpoints" / "last")
    assert state["step"] == 4


def test_degrade_writes_a_strip_and_the_svd_table(image_folder, tmp_path, capsys):
    image = next(image_folder.rglob("*.png"))
    out = tmp_path / "strip.png"
    code = main(["degrade", str(RECIPES / "svd_afhq.toml"), "--image", str(image), "--n", "5",
                 "--out", str(out), "--set", "data.image_size=16",
                 "--set", "diffusion.schedule.steps=16"])
    assert code == 0
    with Image.open(out) as strip:
        assert strip.size == (5 * 16, 16)
    table = capsys.readouterr().out.splitlines()
    ranks = [int(line.split()[0]) for line in table if line.strip()[:1].isdigit()]
    assert ranks == list(range(17))  # k = 0..16 for a 16×16 image


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_accumulation_train(image_folder, tmp_path, precision):
    run_dir = tmp_path / "r"
    code = main(["train", str(RECIPES / "svd_afhq.toml"), "--run-dir", str(run_dir),
                 *sets([f"data.root='{image_folder}'", *TINY_SVD, "train.steps=4",
                        "train.grad_accum=2", f"train.precision='{precision}'"])])
    assert code == 0
    rows = read_metrics(run_dir / "metrics.csv")
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows)
    scaler = checkpoint.load_state(run_dir / "checkpoints" / "last")["scaler"]
    assert ("scale" in scaler) == (precision == "fp16")  # the GradScaler only runs for fp16


def test_training_into_a_trained_run_needs_resume(svd_run, capsys):
    code = main(["train", str(svd_run / "recipe.toml"), "--run-dir", str(svd_run)])
    assert code == 2
    assert "already holds a run (checkpoints, recipe.toml, metrics.csv" in capsys.readouterr().err


def test_sample_restore_writes_original_degraded_direct_sampled(svd_run, image_folder, tmp_path):
    out = tmp_path / "restored.png"
    code = main(["sample", str(svd_run), "--restore", str(image_folder), "--n", "3",
                 "--restore-step", "8", "--out", str(out)])
    assert code == 0
    with Image.open(out) as grid:
        assert grid.size == (2 + 4 * 18, 2 + 3 * 18)  # 4 columns, one row per image
    assert main(["sample", str(svd_run), "--restore", str(tmp_path / "nothing")]) == 2
    assert main(["sample", str(svd_run), "--restore", str(image_folder),
                 "--restore-step", "99"]) == 2


def test_open_checkpoint_of_a_run_dir_or_a_checkpoint_dir(svd_run):
    from corediff.engine.loading import load_model, open_checkpoint

    by_run = open_checkpoint(svd_run)
    assert by_run.path == svd_run / "checkpoints" / "last" and by_run.run_root == svd_run
    assert by_run.state["step"] == 20
    best = open_checkpoint(svd_run / "checkpoints" / "best", "last",
                           ["diffusion.sampler.type='cold_naive'"])
    assert best.path == svd_run / "checkpoints" / "best" and best.run_root == svd_run
    assert best.pipeline.recipe.diffusion.sampler.type == "cold_naive"
    model = load_model(by_run, use_ema=True)
    assert not model.training
    assert next(model.parameters()).device == torch.device("cpu")
    with pytest.raises(corediff.ConfigError, match="neither a run directory"):
        open_checkpoint(svd_run / "nothing")


def test_restore_with_the_true_x0_returns_it_exactly(image_folder):
    """Algorithm 2 with a perfect restoration network gives back x0 from any start step."""
    recipe = corediff.load_recipe(RECIPES / "svd_afhq.toml",
                                  [f"data.root='{image_folder}'", *TINY_SVD])
    pipeline = corediff.build(recipe)
    x0 = torch.stack([pipeline.dataset[i][0] for i in range(3)])
    oracle = lambda x_t, t, y: x0 - x_t  # noqa: E731 - residual parameterization: x̂0 = x_t + out
    degraded, direct, sample = pipeline.restore(x0, 12, model=oracle)
    t = torch.full((3,), 12)
    torch.testing.assert_close(degraded, pipeline.degradation.degrade(x0, t))
    torch.testing.assert_close(direct, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(sample, x0, atol=1e-5, rtol=0)
    assert (degraded - x0).abs().max() > 0.05  # the degradation did something
