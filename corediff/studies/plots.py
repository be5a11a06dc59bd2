"""A study's plots: quality against network evaluations (one panel per model family, step
counts joined into curves with 95 % bands, the real-data floor dashed, the legend outside) and
the training loss (one panel per parameterization, whose losses alone are comparable)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from corediff.evaluation.names import NON_NEGATIVE
from corediff.studies.config import Study
from corediff.studies.runner import run_dir


def series_name(sampler: str) -> str:
    """A sampler name without its step count (``dpmpp_2m10`` -> ``dpmpp_2m``)."""
    return re.sub(r"(?<=[A-Za-z])\d+(?=_|$)", "", sampler, count=1)


def series(lines: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The (cell, sampler) lines joined into curves: samplers of a cell that differ only in
    their step count (and so in nfe) form one curve; any other line is a point of its own."""
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        curves.setdefault((line["cell"], series_name(line["sampler"])), []).append(line)
    joined = {}
    for (cell, name), members in curves.items():
        nfes = [m["nfe"].mean for m in members]
        if len(members) > 1 and len(set(nfes)) == len(nfes):
            joined[(cell, name)] = sorted(members, key=lambda m: m["nfe"].mean)
        else:
            joined.update({(cell, m["sampler"]): [m] for m in members})
    return joined


def plot_quality(lines: list[dict[str, Any]], families: dict[str, str], metric: str,
                 floors: list[float], path: Path) -> None:
    """Metric (mean with a 95 % band) against network evaluations: one panel per model
    family, one curve per cell and sampler (step counts joined), the real-data floor as a
    dashed line, the legend outside."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = _pyplot()
    names = sorted(set(families.values()))
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 3.4 * len(names)), squeeze=False)
    markers = dict(zip(families, "osD^vPX<>*" * len(families), strict=False))
    for axis, family in zip(axes[:, 0], names, strict=True):
        axis.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours, then markers
        for (cell, name), members in series(lines).items():
            if families.get(cell) != family:
                continue
            points = [(m["nfe"].mean, m[metric]) for m in members if not math.isnan(m[metric].mean)]
            if not points:
                continue
            x = [nfe for nfe, _ in points]
            y = [e.mean for _, e in points]
            drawn = axis.plot(x, y, marker=markers[cell], label=f"{cell} / {name}")[0]
            low = [e.low if not math.isnan(e.half_width) else e.mean for _, e in points]
            high = [e.high if not math.isnan(e.half_width) else e.mean for _, e in points]
            if len(points) > 1:
                axis.fill_between(x, low, high, color=drawn.get_color(), alpha=0.15)
            else:
                axis.errorbar(x, y, yerr=[[y[0] - low[0]], [high[0] - y[0]]],
                              color=drawn.get_color(), capsize=3)
        for value in floors:
            axis.axhline(value, color="gray", linestyle="--", label="floor: real data")
        axis.set(title=f"{family}", xlabel="network evaluations (nfe)", ylabel=metric,
                 xscale="log")
        ticks: list[float] = []
        for nfe in sorted({m["nfe"].mean for m in lines if families.get(m["cell"]) == family
                           and not math.isnan(m["nfe"].mean)}):
            if not ticks or nfe > 1.2 * ticks[-1]:  # 19 next to 20 would overprint
                ticks.append(nfe)
        axis.set_xticks(ticks)
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        shown = [m[metric].mean for m in lines if families.get(m["cell"]) == family
                 and m[metric].mean > 0]
        if metric in NON_NEGATIVE and shown and max(shown) > 20 * min(shown):
            axis.set_yscale("log")  # values over decades: log, never below zero either
        elif metric in NON_NEGATIVE:
            axis.set_ylim(bottom=0)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_losses(study: Study, out: Path, parameterizations: dict[str, str], path: Path) -> None:
    """Training loss (mean over seeds, min–max band) against the step: one panel per
    parameterization, since losses of different parameterizations are not comparable."""
    from corediff.engine.rundir import read_metrics

    plt = _pyplot()
    names = sorted(set(parameterizations.values()))
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 3.2 * len(names)), squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=True):
        for cell in study.cells():
            if parameterizations[cell.name] != name:
                continue
            curves = []
            for seed in study.spec.study.seeds:
                metrics = run_dir(out, cell, seed) / "metrics.csv"
                if metrics.is_file():
                    curves.append([(int(r["step"]), float(r["loss"]))
                                   for r in read_metrics(metrics)])
            length = min((len(c) for c in curves), default=0)
            if not length:
                continue
            steps = [step for step, _ in curves[0][:length]]
            values = [[c[i][1] for c in curves] for i in range(length)]
            drawn = axis.plot(steps, [sum(v) / len(v) for v in values], label=cell.name)[0]
            axis.fill_between(steps, [min(v) for v in values], [max(v) for v in values],
                              color=drawn.get_color(), alpha=0.15)
        axis.set(title=f"parameterization: {name}", xlabel="step",
                 ylabel="training loss (mean over seeds)", yscale="log")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
