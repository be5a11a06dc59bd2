"""A real third-party package: pip-installed (no network), found through its entry point,
and used by a recipe end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import install_example

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "corediff-pixelate"

RECIPE = """
[data]
type = "digits"
image_size = 8

[model]
type = "unet"
preset = "tiny"

[diffusion.schedule]
type = "rank_linear"
steps = 4

[diffusion.degradation]
type = "pixelate"
max_block = 4

[diffusion.parameterization]
type = "x0"

[diffusion.loss_weighting]
type = "simple"

[diffusion.sampler]
type = "cold_improved"

[diffusion.prior]
type = "constant"

[train]
steps = 3
batch_size = 8
checkpoint_every = 3
log_every = 1

[sample]
n = 4
batch_size = 4

[run]
device = "cpu"
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return install_example("corediff-pixelate", tmp_path_factory.mktemp("site"))


def corediff(env: dict[str, str], *args: str, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "corediff", *args], env=env, cwd=cwd,
        capture_output=True, text=True,
    )


def test_installed_plugin_is_listed_with_its_distribution(installed) -> None:
    result = corediff(installed, "plugins", "list", "--kind", "degradation")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "pixelate" in line)
    assert "corediff-pixelate 0.1.0" in line
    assert "corediff_pixelate.pixelate:PixelateDegradation" in line


def test_recipe_using_the_plugin_runs_end_to_end(installed, tmp_path: Path) -> None:
    recipe = tmp_path / "pixelate.toml"
    recipe.write_text(RECIPE)
    result = corediff(installed, "run", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "run").rglob("*.png")), "no sample grid written"
    assert list((tmp_path / "run").rglob("*.safetensors")), "no checkpoint written"


def test_pixelate_keeps_x0_at_t0_and_averages_blocks(installed) -> None:
    code = (
        "import torch, corediff\n"
        "s = corediff.create('schedule', 'rank_linear', steps=4)\n"
        "d = corediff.create('degradation', 'pixelate', schedule=s, max_block=4)\n"
        "x = torch.randn(2, 3, 8, 8)\n"
        "y = d.degrade(x, torch.tensor([0, 4]))\n"
        "assert torch.equal(y[0], x[0])\n"
        "block = x[1, :, :4, :4].mean(dim=(-1, -2))\n"
        "assert torch.allclose(y[1, :, 0, 0], block, atol=1e-6)\n"
        "assert torch.allclose(y[1, :, 3, 3], block, atol=1e-6)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=installed, capture_output=True,
                            text=True)
    assert result.stdout.strip() == "ok", result.stderr
