"""Device discipline: every random draw happens on the device of the generator that drives it.

torch refuses ``randn``/``rand``/``randint``/``multinomial`` with a generator on one device and
the output on another (a CUDA generator and CPU weights, as the channel-mean GMM prior once
did). This CPU machine has a single device, so the rule is checked three ways:

* statically, over every module of corediff, the first-party plugins and the example
  packages: a torch sampler called with ``generator=`` goes through
  :mod:`corediff.maths.noise`, unless that generator is a CPU ``torch.Generator()`` made in
  the same function;
* by the :mod:`corediff.maths.noise` helpers' own tests (same numbers as the direct call);
* with CUDA (``pytest -m cuda``): every prior, degradation and sampler of the conformance
  chains runs with a CPU generator driving CUDA tensors and the reverse, and gives the same
  numbers as on the CPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from corediff.kinds import KINDS
from corediff.maths import noise
from corediff.registry import registry
from corediff.testing import build_chain, chains

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "corediff", ROOT / "plugins" / "corediff_plugins", ROOT / "examples"]
SAMPLERS = {"randn", "rand", "randint", "randperm", "multinomial", "normal", "bernoulli",
            "poisson", "randn_like", "rand_like", "randint_like"}
IN_PLACE = {"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_",
            "log_normal_", "cauchy_"}


def _is_cpu_generator(node: ast.AST) -> bool:
    """``torch.Generator()`` (no device) possibly followed by ``.manual_seed(...)``."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "manual_seed":
        node = node.func.value
    return (isinstance(node, ast.Call) and not node.args and not node.keywords
            and ast.unparse(node.func) in {"torch.Generator", "Generator"})


def violations(path: Path) -> list[str]:
    """Calls in ``path`` that draw with a generator without :mod:`corediff.maths.noise`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.Module)]:
        cpu_names = {target.id for node in ast.walk(function) if isinstance(node, ast.Assign)
                     and _is_cpu_generator(node.value)
                     for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(function):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name, owner = node.func.attr, ast.unparse(node.func.value)
            if not ((owner == "torch" and name in SAMPLERS) or name in IN_PLACE):
                continue
            generator = next((k.value for k in node.keywords if k.arg == "generator"), None)
            if generator is None or _is_cpu_generator(generator):
                continue
            if isinstance(generator, ast.Name) and generator.id in cpu_names:
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def test_every_seeded_draw_follows_its_generator() -> None:
    files = [path for source in SOURCES for path in source.rglob("*.py")
             if path != ROOT / "corediff" / "maths" / "noise.py"]
    assert len(files) > 50
    found = [line for path in files for line in violations(path)]
    assert found == [], ("draw on the generator's device with corediff.maths.noise:\n"
                         + "\n".join(found))


def test_the_check_finds_a_direct_draw(tmp_path: Path) -> None:
    bad = ROOT / "corediff" / "_probe_for_test.py"
    source = ("import torch\n"
              "def f(x, generator):\n"
              "    local = torch.Generator().manual_seed(0)\n"
              "    torch.randn(3, generator=local)\n"
              "    return torch.multinomial(x, 2, generator=generator)\n")
    bad.write_text(source)
    try:
        assert [line.split(": ", 1)[0] for line in violations(bad)] == [
            "corediff/_probe_for_test.py:5"]
    finally:
        bad.unlink()


def test_noise_helpers_give_the_direct_draws() -> None:
    weights = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    direct = torch.multinomial(weights, 50, replacement=True,
                               generator=torch.Generator().manual_seed(3))
    drawn = noise.multinomial(weights, 50, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, direct) and not (drawn == 1).any()
    pairs = [
        (noise.rand((5,), torch.Generator().manual_seed(1), "cpu"),
         torch.rand(5, generator=torch.Generator().manual_seed(1))),
        (noise.randint(2, 9, (7,), torch.Generator().manual_seed(2), "cpu"),
         torch.randint(2, 9, (7,), generator=torch.Generator().manual_seed(2))),
        (noise.randn((4,), torch.Generator().manual_seed(4), "cpu", torch.float64),
         torch.randn(4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)),
    ]
    for drawn, direct in pairs:
        assert torch.equal(drawn, direct)


def _chains(kind: str) -> list[tuple[str, dict]]:
    return [(name, chain) for name in registry(kind).names() for chain in chains(kind, name)[:1]]


def _draws(kind: str, built: dict, generator: torch.Generator, device: str) -> torch.Tensor:
    """What one component of ``built`` (on ``device``) draws from ``generator``."""
    x0 = torch.linspace(-1, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8).to(device)
    if kind == "prior":
        prior = built["prior"]
        if hasattr(prior, "fit"):
            prior.fit(x0.cpu())
        return prior.sample((2, 3, 8, 8), generator=generator, device=device)
    if kind == "degradation":
        drawn = built["degradation"].sample_noise(x0, generator)
        return torch.zeros(()) if drawn is None else drawn
    def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(x)
    out = built["parameterization"].output_channels(3)
    fn = network if out == 3 else (lambda x, t: torch.cat([0.5 * torch.tanh(x)] * 2, 1))
    return built["sampler"].sample(fn, x0, generator=generator).sample


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["prior", "degradation", "sampler"])
def test_cross_device_draws_match_the_cpu(kind: str) -> None:
    assert any(k.name == kind for k in KINDS)
    for name, chain in _chains(kind):
        results = {}
        for tensors, generator_on in (("cpu", "cpu"), ("cuda", "cpu"), ("cpu", "cuda"),
                                      ("cuda", "cuda")):
            built = build_chain(chain, tensors)
            generator = torch.Generator(generator_on).manual_seed(0)
            results[tensors, generator_on] = _draws(kind, built, generator, tensors).cpu()
        for (tensors, generator_on), value in results.items():
            reference = results["cpu", generator_on]
            torch.testing.assert_close(value, reference, atol=1e-4, rtol=1e-4,
                                       msg=f"{kind} {name}: tensors {tensors}")
