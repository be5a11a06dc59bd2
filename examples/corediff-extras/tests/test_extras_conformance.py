"""corediff's own conformance suite (corediff.testing) over the three plugins of this package."""

from __future__ import annotations

import pytest

from corediff.testing import check_plugin, conformance_cases

PLUGINS = [("sampler", "deis"), ("guidance", "cfgpp"), ("loss_weighting", "p2")]


@pytest.mark.parametrize("case", conformance_cases(names={name for _, name in PLUGINS}), ids=str)
def test_conformance(case):
    case.run()


@pytest.mark.parametrize(("kind", "name"), PLUGINS)
def test_every_plugin_is_checked(kind, name):
    assert check_plugin(kind, name) >= 1
