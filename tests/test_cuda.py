"""The main recipes end to end on a CUDA GPU (``pytest -m cuda``; skipped without one): train a
few steps, checkpoint (the NaN check stacks device and CPU optimizer state), sample a grid
(the GMM prior draws with a CUDA generator) and sample again from the checkpoint with bf16
and tf32. These are the paths reading the code found broken before any GPU had run them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from corediff.cli import main
from corediff.engine import checkpoint

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = ["model.preset='tiny'", "model.attention_resolutions=[]", "train.steps=4",
        "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=2",
        "train.warmup_steps=1", "train.num_workers=2", "sample.n=4", "sample.batch_size=4",
        "run.device='cuda'"]


def _folder(root: Path) -> Path:
    from corediff_plugins.datasets.sample_patches import write_sample_folder

    write_sample_folder(root, count=12, size=40)
    return root


@pytest.mark.cuda
@pytest.mark.parametrize("recipe, extra", [
    ("svd_afhq.toml", ["data.image_size=32", "diffusion.sampler.steps=4"]),
    ("blur_afhq.toml", ["data.image_size=32", "diffusion.schedule.steps=20"]),
    ("quickstart.toml", ["train.precision='bf16'", "diffusion.sampler.steps=5"]),
])
def test_recipe_trains_and_samples_on_cuda(recipe: str, extra: list[str], tmp_path: Path) -> None:
    assert torch.cuda.is_available()
    overrides = TINY + extra
    if recipe != "quickstart.toml":
        overrides.append(f"data.root='{_folder(tmp_path / 'images')}'")
    run_dir = tmp_path / "run"
    args = ["run", str(RECIPES / recipe), "--run-dir", str(run_dir)]
    assert main(args + [a for o in overrides for a in ("--set", o)]) == 0
    assert checkpoint.load_state(run_dir / "checkpoints" / "last")["step"] == 4
    for precision in ("bf16", "tf32"):
        out = tmp_path / f"{precision}.png"
        assert main(["sample", str(run_dir), "--n", "4", "--out", str(out),
                     "--set", f"sample.precision='{precision}'"]) == 0
        assert out.stat().st_size > 0
