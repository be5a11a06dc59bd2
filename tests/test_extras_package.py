"""examples/corediff-extras, a second third-party package (DEIS sampler, CFG++ guidance, P2
weighting), pip-installed (no network) into a fresh target: its own test suite passes
(diffusers oracle, closed forms, corediff.testing, no private imports) and a recipe using all
three plugins trains and samples through the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from conftest import install_example

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "corediff-extras"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return install_example("corediff-extras", tmp_path_factory.mktemp("site"))


def test_its_own_suite_passes(installed, tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), str(EXAMPLE / "tests")],
        env=installed, capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    assert passed >= 20 and "skipped" not in result.stdout


def test_a_recipe_with_deis_cfgpp_and_p2_runs(installed, tmp_path: Path) -> None:
    readme = (EXAMPLE / "README.md").read_text()
    diffusion = tomllib.loads(re.search(r"```toml\n(.*?)```", readme, re.S).group(1))
    quick = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text())
    recipe = {**quick, **diffusion, "data": {"type": "digits", "image_size": 8}}
    recipe["train"] = {"steps": 4, "batch_size": 8, "log_every": 2, "checkpoint_every": 4,
                       "warmup_steps": 1, "label_dropout": 0.1}
    recipe["sample"] = {"n": 10, "batch_size": 10}
    recipe["run"] = {"device": "cpu"}
    path = tmp_path / "extras.toml"
    path.write_text(tomli_w.dumps(recipe))
    result = subprocess.run(
        [sys.executable, "-m", "corediff", "run", str(path), "--run-dir", str(tmp_path / "run")],
        env=installed, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stored = tomllib.loads((tmp_path / "run" / "recipe.toml").read_text())["diffusion"]
    assert (stored["sampler"]["type"], stored["guidance"]["type"],
            stored["loss_weighting"]["type"]) == ("deis", "cfgpp", "p2")
    assert (tmp_path / "run" / "samples.png").exists()
