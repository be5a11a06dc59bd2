"""``corediff bench``: check and measure this machine (see :mod:`corediff.bench`).

Writes ``report.json`` and ``report.md`` into ``--out`` (default ``bench/``), prints the
Markdown, and exits 1 when a check or measurement failed (0 otherwise; skipped ones do not
count).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main(args: argparse.Namespace) -> int:
    from corediff import bench
    from corediff.engine.distributed import resolve_device
    from corediff.paths import check_folder

    out = Path(args.out)
    check_folder("--out", out)
    device = resolve_device(args.device)
    out.mkdir(parents=True, exist_ok=True)

    def progress(name: str, entry: dict[str, Any]) -> None:
        print(f"bench: {name}: {entry['result']} ({entry['seconds']} s)", file=sys.stderr,
              flush=True)

    settings = bench.Settings(
        device, quick=args.quick, image_size=args.image_size, batch=args.batch,
        compile=not args.no_compile, compile_on_cpu=args.compile_on_cpu,
        ddp_on_cpu=args.ddp_on_cpu,
    )
    report = bench.run(settings, progress)
    text = bench.markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text, end="")
    print(f"written: {out / 'report.json'}, {out / 'report.md'}")
    failures = bench.failed(report)
    if failures:
        print(f"corediff bench: failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0
