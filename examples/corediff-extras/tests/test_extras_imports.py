"""corediff-extras uses corediff's public API only: no private module or name (leading "_"),
no first-party plugin (corediff_plugins), only the modules documented as public."""

from __future__ import annotations

import ast
from pathlib import Path

import corediff_extras

PACKAGE = Path(corediff_extras.__file__).parent
PUBLIC = {"corediff", "corediff.config", "corediff.interfaces", "corediff.maths.timesteps",
          "corediff.maths.gaussian", "corediff.maths.noise", "corediff.capabilities", "corediff.testing",
          "corediff.denoiser", "corediff.pipeline", "corediff.kinds", "corediff.maths.cold"}


def imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement (absolute imports only)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def problems(source: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for module, names in imports(tree):
        root = module.split(".")[0]
        if root == "corediff_plugins":
            found.append(f"imports first-party plugins: {module}")
        if root != "corediff":
            continue
        if any(part.startswith("_") for part in module.split(".")):
            found.append(f"private module {module}")
        elif module not in PUBLIC:
            found.append(f"module outside the public API: {module}")
        found += [f"private name {module}.{name}" for name in names if name.startswith("_")]
    for node in ast.walk(tree):  # corediff._anything
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and isinstance(node.value, ast.Name) and node.value.id == "corediff"):
            found.append(f"private attribute corediff.{node.attr}")
    return found


def test_checker_catches_violations():
    bad = ("from corediff._x import a\nfrom corediff.maths.gaussian import _private\n"
           "import corediff_plugins.samplers.ddim\nfrom corediff.registry import registry\n"
           "import corediff\ncorediff._API\n")
    assert len(problems(bad)) == 5


def test_only_public_corediff_imports():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert {m.name for m in modules} >= {"deis.py", "cfgpp.py", "p2.py"}
    found = {str(m.relative_to(PACKAGE)): problems(m.read_text()) for m in modules}
    assert not any(found.values()), found
