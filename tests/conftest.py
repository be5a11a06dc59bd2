"""Shared fixtures: fake installed distributions for registry tests; example packages
pip-installed (no network) into a temporary target."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from corediff import registry as registry_module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip on machines without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (none on this machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Install a fake distribution (dist-info with entry points, plus modules) on sys.path.

    Usage: ``fake_dist("acme", "1.2", {"corediff.degradations": {"x": "acme_x:X"}},
    modules={"acme_x": "source code"})``.
    """

    def make(
        name: str, version: str, entry_points: dict[str, dict[str, str]],
        modules: dict[str, str] | None = None,
    ) -> Path:
        root = tmp_path / f"site-{name}"
        info = root / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        lines = []
        for group, entries in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{ep_name} = {target}" for ep_name, target in entries.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(source)
        monkeypatch.syspath_prepend(str(root))
        registry_module.refresh()
        return root

    yield make
    registry_module.refresh()
    for module in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[module]


def install_example(name: str, target: Path) -> dict[str, str]:
    """pip-install ``examples/<name>`` (no deps, no index) into ``target``; returns an
    environment whose PYTHONPATH puts it first, for subprocesses."""
    source = Path(__file__).resolve().parents[1] / "examples" / name
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env
