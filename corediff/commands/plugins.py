"""``corediff plugins list`` (reads install metadata only, imports no plugin) and
``corediff plugins check`` (imports every plugin and reports failures)."""

from __future__ import annotations

import argparse
import sys

from corediff.registry import REGISTRIES, check_plugins, list_plugins


def listing(args: argparse.Namespace) -> int:
    for kind, infos in list_plugins(args.kind).items():
        print(f"{kind}:")
        for info in infos:
            print(f"  {info.name:<28} {info.origin:<24} {info.target}")
    return 0


def check(args: argparse.Namespace) -> int:
    failures = check_plugins()
    total = sum(len(reg.names()) for reg in REGISTRIES.values())
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"{total - len(failures)} of {total} plugins load")
    return 1 if failures else 0
