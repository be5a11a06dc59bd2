"""Conformance: every registered plugin of every kind, first- or third-party, passes its
interface's contract (corediff.testing: shapes, dtype, device, determinism under a seeded
generator, nfe, the true-x0 oracle and the exact Gaussian ODE path for samplers, guidance
invariants, models at fractional t, unbiased importance weights, config round-trip), with its
default config and with configs drawn from its schema. A new plugin joins automatically
through its entry point."""

from __future__ import annotations

import pytest

from corediff.testing import conformance_cases

CASES = conformance_cases()

#: First-party plugins failing a check, in files this suite's owner may not change (samplers,
#: shared maths): real bugs, each with the suite's finding (a case id -> why).
_KARRAS = ("with the Karras grid on the default VP schedule the sample's error does not fall "
           "from N = 10 to 20 (0.147, 0.157, 0.038 data std at N = 10, 20, 40): rate 2.0 over "
           "the last halving only")
_SHIFT = ("with shift = 2 on the flow path the multistep solver's error falls at rate 1.1 "
          "(1.18, 1.04, 0.50 data std at N = 10, 20, 40), not at its declared order 2; the "
          "one-step solvers (Euler, Heun) converge with the same shift")
KNOWN = {
    "sampler-dpmpp_2m-with-gaussian-sigmas=karras-cpu": _KARRAS,
    **{f"sampler-{s}-with-flow-shift=2.0-cpu": _SHIFT for s in ("dpmpp_2m", "unipc")},
}


def _marks(case) -> list:
    reason = KNOWN.get(str(case))
    return [pytest.mark.xfail(reason=reason, strict=False)] if reason else []


@pytest.mark.parametrize("case", [pytest.param(c, marks=_marks(c), id=str(c)) for c in CASES])
def test_plugin_conformance(case):
    case.run()


def test_every_registered_plugin_has_a_case():
    from corediff.kinds import KINDS
    from corediff.registry import registry

    covered = {(case.kind, case.name) for case in CASES}
    assert covered == {(kind.name, name) for kind in KINDS for name in registry(kind.name).names()}
