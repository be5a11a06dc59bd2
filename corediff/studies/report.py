"""A study's results: mean ± 95 % confidence interval over seeds, a CSV, RESULTS.md with the
questions answered, sample grids and plots (training loss per cell; quality versus network
evaluations).

The interval is Student's t: mean ± t_{0.975, k−1} · s / √k over the k seeds (none for k = 1).
A question compares groups of rows; the answer names the better group, and is "clear" when
the two groups' intervals do not overlap, "not resolved" otherwise.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corediff.studies.config import Question, Study, matches
from corediff.studies.runner import run_dir


@dataclass(frozen=True)
class Estimate:
    """Mean and 95 % half-width over k values (half-width NaN when k < 2)."""

    mean: float
    half_width: float
    k: int

    def __str__(self) -> str:
        if math.isnan(self.mean):
            return "–"
        if self.half_width == 0 and self.mean == int(self.mean):
            return str(int(self.mean))  # the same count on every seed (nfe)
        digits = 3 if abs(self.mean) < 10 else 1
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def estimate(values: Iterable[float]) -> Estimate:
    """Mean ± Student-t 95 % half-width of finite values."""
    from scipy.stats import t as student

    data = [v for v in values if math.isfinite(v)]
    k = len(data)
    if k == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = sum(data) / k
    if k == 1:
        return Estimate(mean, math.nan, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in data) / (k - 1))
    return Estimate(mean, float(student.ppf(0.975, k - 1)) * sd / math.sqrt(k), k)


def table(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """One line per (cell, sampler): estimates of each metric, nfe and times."""
    keys = list(dict.fromkeys((r["cell"], r["sampler"]) for r in rows))
    columns = [*metrics, "nfe", "train_seconds", "sampling_seconds"]
    lines = []
    for cell, sampler in keys:
        group = [r for r in rows if (r["cell"], r["sampler"]) == (cell, sampler)]
        lines.append({"cell": cell, "sampler": sampler, "labels": group[0]["labels"],
                      **{c: estimate(r["metrics"].get(c, math.nan) for r in group)
                         for c in columns}})
    return lines


def answer(question: Question, rows: list[dict[str, Any]]) -> str:
    """One line: each group's estimate, the better one, and whether the CIs separate."""
    groups = []
    for selector in question.compare:
        values = [r["metrics"].get(question.metric, math.nan) for r in rows
                  if matches(r["labels"], selector)]
        groups.append((selector, estimate(values)))
    shown = "; ".join(f"{sel}: {est} (k={est.k})" for sel, est in groups)
    valid = [(sel, est) for sel, est in groups if not math.isnan(est.mean)]
    if len(valid) < 2:
        return f"{shown} — not enough results to answer."
    sign = 1 if question.better == "lower" else -1
    ranked = sorted(valid, key=lambda item: sign * item[1].mean)
    (best, top), (_, runner_up) = ranked[0], ranked[1]
    separate = top.high < runner_up.low if sign == 1 else top.low > runner_up.high
    if any(math.isnan(e.half_width) for _, e in valid[:2]):
        verdict = "one seed only: no interval, so not resolved"
    elif separate:
        verdict = "clear: the 95 % intervals do not overlap"
    else:
        verdict = "not resolved: the 95 % intervals overlap"
    return f"{shown}. Best: **{best}** ({question.better} {question.metric} is better) — {verdict}."


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = sorted({k for r in rows for k in r["metrics"]})
    labels = sorted({k for r in rows for k in r["labels"]})
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "sampler", "seed", *labels, *keys])
        for r in rows:
            writer.writerow([r["cell"], r["sampler"], r["seed"],
                             *(r["labels"].get(k, "") for k in labels),
                             *(r["metrics"].get(k, "") for k in keys)])


def plot_losses(study: Study, out: Path, path: Path) -> None:
    """Mean training loss over seeds against the step, one line per cell."""
    from corediff.engine.rundir import read_metrics

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for cell in study.cells():
        curves = []
        for seed in study.spec.study.seeds:
            metrics = run_dir(out, cell, seed) / "metrics.csv"
            if metrics.is_file():
                curves.append([(int(r["step"]), float(r["loss"])) for r in read_metrics(metrics)])
        if curves:
            length = min(len(c) for c in curves)
            steps = [step for step, _ in curves[0][:length]]
            mean = [sum(c[i][1] for c in curves) / len(curves) for i in range(length)]
            axis.plot(steps, mean, label=cell.name)
    axis.set(xlabel="step", ylabel="training loss (mean over seeds)", yscale="log")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_quality(lines: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Metric (mean ± CI) against network evaluations, one point per (cell, sampler)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for line in lines:
        value, nfe = line[metric], line["nfe"]
        if math.isnan(value.mean):
            continue
        error = 0 if math.isnan(value.half_width) else value.half_width
        axis.errorbar(nfe.mean, value.mean, yerr=error, fmt="o", capsize=3,
                      label=f"{line['cell']} / {line['sampler']}")
    axis.set(xlabel="network evaluations (nfe)", ylabel=metric, xscale="log")
    axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as typed there)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_report(study: Study, out: Path, report: Path, rows: list[dict[str, Any]]) -> Path:
    """RESULTS.md, results.csv, plots and one sample grid per cell into ``report``."""
    spec = study.spec.study
    report.mkdir(parents=True, exist_ok=True)
    write_csv(rows, report / "results.csv")
    lines = table(rows, spec.metrics)
    plot_losses(study, out, report / "loss_curves.png")
    plot_quality(lines, spec.plot_metric or spec.metrics[0], report / "quality_vs_nfe.png")
    grids = []
    for cell in study.cells():
        grid = run_dir(out, cell, spec.seeds[0]) / "samples.png"
        if grid.is_file():
            name = f"grid_{cell.name.replace('=', '-').replace(',', '_')}.png"
            shutil.copyfile(grid, report / name)
            grids.append((cell.name, name))
    text = [f"# Study: {spec.name}", "", spec.description, "",
            f"Base recipe `{spec.recipe}`; seeds {spec.seeds}; {spec.n} samples per "
            f"evaluation; overrides applied to every cell: "
            f"{' '.join(f'`{o}`' for o in spec.set) or 'none'}. "
            "Values are mean ± 95 % CI (Student t) over seeds. Regenerate with "
            f"`corediff study {_shown(study.path)} --report {_shown(report)}`.", ""]
    if study.spec.questions:
        text += ["## Answers", ""]
        text += [f"- **{q.text}** {answer(q, rows)}" for q in study.spec.questions]
        text.append("")
    header = ["cell", "sampler", *spec.metrics, "nfe", "train s", "sampling s"]
    text += ["## Results", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for line in lines:
        values = [str(line[m]) for m in [*spec.metrics, "nfe", "train_seconds",
                                         "sampling_seconds"]]
        text.append(f"| {line['cell']} | {line['sampler']} | " + " | ".join(values) + " |")
    text += ["", "## Plots", "", "![training loss](loss_curves.png)", "",
             "![quality versus network evaluations](quality_vs_nfe.png)", ""]
    if grids:
        text += ["## Samples (first seed)", ""]
        text += [f"`{cell}`: ![{cell}]({name})" for cell, name in grids]
        text.append("")
    path = report / "RESULTS.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path
