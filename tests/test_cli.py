"""The command line: start-up imports nothing heavy, plugins list/check, recipe commands."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from corediff import __version__
from corediff.cli import main

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
from corediff.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules
               if m.startswith("corediff_plugins") or m in ("torch", "numpy", "pydantic"))
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--help"], ["plugins", "list"], ["--version"]])
def test_start_up_imports_no_plugin_module(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
        check=True,
    )
    heavy = result.stdout.strip().splitlines()[-1]
    assert heavy == "HEAVY=", heavy


def test_python_dash_m_and_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corediff", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"corediff {__version__}"


def test_plugins_list_shows_every_kind(capsys: pytest.CaptureFixture) -> None:
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    for kind in ("schedule:", "degradation:", "parameterization:", "loss_weighting:",
                 "sampler:", "prior:", "model:", "dataset:"):
        assert kind in out
    assert "corediff_plugins.degradations.svd:SVDDegradation" in out


def test_plugins_check_loads_every_first_party_plugin(capsys: pytest.CaptureFixture) -> None:
    assert main(["plugins", "check"]) == 0, capsys.readouterr().err
    assert " plugins load" in capsys.readouterr().out


def test_plugins_check_reports_a_broken_plugin(fake_dist, capsys) -> None:
    fake_dist("fake-cli-broken", "9.9", {"corediff.samplers": {"bad": "fake_cli_broken:X"}},
              modules={"fake_cli_broken": "raise RuntimeError('boom')\n"})
    assert main(["plugins", "check"]) == 1
    err = capsys.readouterr().err
    assert ("FAIL sampler 'bad' from fake-cli-broken 9.9 failed to load "
            "(target 'fake_cli_broken:X'): RuntimeError: boom") in err


def test_recipe_show_prints_resolved_recipe_with_defaults(capsys) -> None:
    assert main(["recipe", "show", str(ROOT / "recipes/quickstart.toml"),
                 "--set", "train.steps=7"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["train"]["steps"] == 7
    assert "lr" in shown["train"] and "ema_decay" in shown["train"]  # defaults filled in
    assert shown["diffusion"]["sampler"]["type"]


def test_recipe_show_round_trips(tmp_path: Path, capsys) -> None:
    assert main(["recipe", "show", str(ROOT / "recipes/svd_afhq.toml")]) == 0
    first = capsys.readouterr().out
    (tmp_path / "again.toml").write_text(first)
    assert main(["recipe", "show", str(tmp_path / "again.toml")]) == 0
    assert capsys.readouterr().out == first


def test_recipe_schema_describes_plugins(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert main(["recipe", "schema", "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    text = json.dumps(schema)
    for name in ('"ddim"', '"cold_improved"', '"svd"', '"unet"', '"digits"'):
        assert name in text
    assert schema["properties"]["diffusion"]
    assert schema["additionalProperties"] is False


def test_command_modules_import_no_other_command_module() -> None:
    import ast

    commands = ROOT / "corediff" / "commands"
    modules = {f"corediff.commands.{p.stem}" for p in commands.glob("*.py")} - {
        "corediff.commands.__init__"}
    assert {"corediff.commands.train", "corediff.commands.sample", "corediff.commands.degrade",
            "corediff.commands.evaluate", "corediff.commands.plugins",
            "corediff.commands.recipe"} <= modules
    for path in commands.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("corediff.commands"), f"{path.name} imports {name}"


def test_command_package_sets_omp_wait_policy_and_imports_nothing_heavy() -> None:
    probe = (
        "import os, sys\n"
        "os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "import corediff.commands\n"
        "heavy = [m for m in ('torch', 'numpy', 'pydantic') if m in sys.modules]\n"
        "print(os.environ['OMP_WAIT_POLICY'], heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "PASSIVE []"


def test_plugins_show_describes_a_plugin(capsys) -> None:
    assert main(["plugins", "show", "ddim"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sampler 'ddim' — corediff {__version__} "
                          "(corediff_plugins.samplers.ddim:DDIMSampler)\n")
    assert 'DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models"' in out
    assert "requires:\n  degradation providing gaussian_family\n" in out
    assert "network evaluations per step: 1\n" in out
    assert "config [diffusion.sampler]:\n" in out
    assert "  steps: int > 0 ≤ 100000 | None, default None\n" in out
    assert "  eta: float ≥ 0, default 0.0\n      η: 0 is deterministic DDIM" in out


def test_plugins_show_capabilities_and_config_dependence(capsys) -> None:
    assert main(["plugins", "show", "svd", "--kind", "degradation"]) == 0
    out = capsys.readouterr().out
    assert "provides (depends on the config: see its capabilities()):\n" in out
    assert "  deterministic: degrade ignores noise" in out
    assert "requires:\n  schedule providing rank\n" in out


def test_plugins_show_unknown_name_suggests(capsys) -> None:
    assert main(["plugins", "show", "ddimm"]) == 2
    err = capsys.readouterr().err
    assert "corediff: error: no plugin named 'ddimm'. Did you mean 'ddim'?" in err
    assert main(["plugins", "show", "ddim", "--kind", "schedule"]) == 2
    assert "no schedule plugin named 'ddim'" in capsys.readouterr().err


def test_every_first_party_config_field_has_a_description() -> None:
    from corediff.kinds import KINDS
    from corediff.registry import registry

    missing = []
    for kind in KINDS:
        for info in registry(kind.name).infos():
            if info.distribution != "corediff":
                continue
            config = registry(kind.name).get(info.name).Config
            missing += [f"{kind.name} {info.name}.{field}"
                        for field, spec in config.model_fields.items() if not spec.description]
    assert missing == []
    schema = json.dumps(__import__("corediff.recipe", fromlist=["x"]).recipe_json_schema())
    assert "Registered plugin name (the entry-point name)" in schema
