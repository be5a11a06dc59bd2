"""Conformance: every registered plugin of every kind, first- or third-party, passes its
interface's contract (corediff.testing: shapes, dtype, device, determinism under a seeded
generator, nfe, the true-x0 oracle for deterministic samplers, config round-trip). A new plugin
joins automatically through its entry point."""

from __future__ import annotations

import pytest

from corediff.testing import conformance_cases

CASES = conformance_cases()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_plugin_conformance(case):
    case.run()


def test_every_registered_plugin_has_a_case():
    from corediff.kinds import KINDS
    from corediff.registry import registry

    covered = {(case.kind, case.name) for case in CASES}
    assert covered == {(kind.name, name) for kind in KINDS for name in registry(kind.name).names()}
