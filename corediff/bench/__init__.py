"""Checks and measurements of ``corediff bench`` (:mod:`.checks`, :mod:`.measures`, run and
reported by :mod:`.report`); :func:`train_throughput` and :func:`peak_flops` are also what
``benchmarks/throughput.py`` prints.

    report = run(Settings(torch.device("cuda"), quick=False))
    print(markdown(report))

A report has ``checks`` (does this machine run corediff's GPU paths?) and ``measurements``
(how fast?). Every entry is a dict whose ``result`` is ``"ok"``, ``"failed: <first line of
the error>"`` or ``"skipped: <reason>"``, with its figures and ``seconds`` (its wall time).
Checks use the tiny U-Net (16×16, batch 2) whatever the settings; measurements use
``Settings.image_size`` and ``batch``. Times are wall-clock means after a warm-up call, the
device synchronised before and after.
"""

from __future__ import annotations

from corediff.bench.common import CHECKS, MODELS, QUICK_MODELS, Settings, entry
from corediff.bench.measures import peak_flops, train_throughput
from corediff.bench.report import failed, markdown, run

__all__ = ["CHECKS", "MODELS", "QUICK_MODELS", "Settings", "entry", "failed", "markdown",
           "peak_flops", "run", "train_throughput"]
