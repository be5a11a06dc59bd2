"""Running every check and measurement (:func:`run`), and the report as Markdown."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import corediff
from corediff.bench.checks import (
    check_bf16,
    check_channels_last,
    check_compile,
    check_cuda,
    check_ddp,
    check_no_host_sync,
)
from corediff.bench.common import CHECKS, MODELS, QUICK_MODELS, Settings, entry
from corediff.bench.measures import (
    measure_data_loader,
    measure_peak_memory,
    measure_sampling,
    measure_svd_sampling,
    measure_svd_share,
    measure_training,
)


def run(settings: Settings, progress: Callable[[str, dict[str, Any]], None] | None = None,
        ) -> dict[str, Any]:
    """Every check, then every measurement, temporary files in a folder removed at the end;
    ``progress(name, entry)`` after each."""
    checks = dict(zip(CHECKS, (check_cuda, check_bf16, check_channels_last, check_compile,
                               check_ddp, check_no_host_sync), strict=True))
    models = QUICK_MODELS if settings.quick else MODELS
    measurements = {f"train_{k}_{p}": measure_training(k, p) for k, p in models}
    measurements |= {"svd_share": measure_svd_share, "data_loader": measure_data_loader,
                     "sampling": measure_sampling, "svd_sampling": measure_svd_sampling,
                     "peak_memory": measure_peak_memory}
    report: dict[str, Any] = {
        "settings": {"device": str(settings.device), "quick": settings.quick,
                     "image_size": settings.size, "batch": settings.batch_size,
                     "timed_steps": settings.steps, "dtype": str(settings.dtype)},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "platform": platform.platform(), "cpus": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "corediff":
                        corediff.__version__},
        "checks": {}, "measurements": {},
    }
    with tempfile.TemporaryDirectory(prefix="corediff_bench_") as workdir:
        settings = replace(settings, workdir=Path(workdir))
        for group, table in (("checks", checks), ("measurements", measurements)):
            if group == "measurements" and settings.cuda:
                torch.cuda.reset_peak_memory_stats(settings.device)
            for name, fn in table.items():
                report[group][name] = entry(fn, settings)
                if progress is not None:
                    progress(name, report[group][name])
    return report


def failed(report: dict[str, Any]) -> list[str]:
    """Names of the checks and measurements that failed."""
    return [name for group in ("checks", "measurements") for name, e in report[group].items()
            if e["result"].startswith("failed")]


def _value(key: str, value: Any) -> str:
    if isinstance(value, float) and (key == "mfu" or key.endswith("share")):
        return f"{value:.2%}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def figures(e: dict[str, Any]) -> str:
    """An entry's figures as one line: ``name value, ...`` (MFU and shares in %)."""
    return ", ".join(f"{k} {_value(k, v)}" for k, v in e.items()
                     if k not in ("result", "seconds"))


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a heading with the settings, a table of the checks and one
    of the measurements."""
    s = report["settings"]
    lines = [f"# corediff bench: {s['device']}{', quick' if s['quick'] else ''} "
             f"({s['image_size']}×{s['image_size']}, batch {s['batch']}, {s['dtype']}, "
             f"torch {report['environment']['torch']})"]
    for group in ("checks", "measurements"):
        lines += ["", f"| {group[:-1]} | result | figures | seconds |", "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {e['result']} | {figures(e)} | {e['seconds']} |"
                  for name, e in report[group].items()]
    return "\n".join(lines) + "\n"

