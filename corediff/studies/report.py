"""A study's results: RESULTS.md with the questions answered from paired statistics, a floor
row of real data in every table, copies flagged, each run's fingerprint, the compute that
regenerates it; results.csv (each column once); sample grids; the plots of
:mod:`corediff.studies.plots`.

Values are mean ± Student-t 95 % half-width over seeds. A question's groups are compared with
the best by :mod:`corediff.studies.statistics` (paired over shared seeds, Holm-adjusted across
the study); "Best" is named only when every other group is separated from it. A group whose
samples are mostly copies of training images (``memorization.copy_share`` above
:data:`corediff.evaluation.memorization.MOSTLY_COPIES`) is flagged, and on a generation-quality
metric (:data:`GENERATION`) it is not counted: it is neither named best nor compared.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corediff.evaluation.memorization import COPY_QUANTILE, MOSTLY_COPIES
from corediff.studies.config import Question, Study, matches
from corediff.studies.plots import plot_losses, plot_quality
from corediff.studies.runner import cell_recipe, run_dir
from corediff.studies.statistics import ALPHA, Difference, Estimate, compare, estimate, holm

COPIES = "memorization.copy_share"
#: Metric families that score generated samples as images of the data (copies do not count).
GENERATION = ("digits.", "inception.")
#: Columns every table shows after the study's metrics.
EXTRA = ("nfe", "train_steps", "train_seconds", "sampling_seconds")


def table(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """One line per (cell, sampler): estimates of each metric, copies, nfe, steps and times."""
    keys = list(dict.fromkeys((r["cell"], r["sampler"]) for r in rows))
    columns = list(dict.fromkeys([*metrics, COPIES, *EXTRA]))
    lines = []
    for cell, sampler in keys:
        group = [r for r in rows if (r["cell"], r["sampler"]) == (cell, sampler)]
        lines.append({"cell": cell, "sampler": sampler, "labels": group[0]["labels"],
                      **{c: estimate(r["metrics"].get(c, math.nan) for r in group)
                         for c in columns}})
    return lines


def copies(estimate_: Estimate) -> bool:
    """Whether a copy share says the samples are mostly copies of training images."""
    return not math.isnan(estimate_.mean) and estimate_.mean > MOSTLY_COPIES


@dataclass
class Group:
    """One selector of a question: its value on each seed and its copy share."""

    selector: str
    values: dict[int, float]
    copy_share: Estimate

    @property
    def estimate(self) -> Estimate:
        return estimate(self.values.values())


@dataclass
class Answer:
    """A question's groups, its best group and each other group's difference from it."""

    question: Question
    groups: list[Group]
    best: Group | None
    differences: dict[str, Difference]
    adjusted: dict[str, float]


def group(question: Question, selector: str, rows: list[dict[str, Any]]) -> Group:
    """The rows a selector picks, one value per seed (their mean with ``aggregate = 'mean'``;
    a study file that pools without it is refused when it loads)."""
    picked = [r for r in rows if matches(r["labels"], selector)]
    by_seed: dict[int, list[float]] = {}
    for r in picked:
        value = r["metrics"].get(question.metric, math.nan)
        if math.isfinite(value):
            by_seed.setdefault(r["seed"], []).append(value)
    values = {seed: sum(v) / len(v) for seed, v in by_seed.items()}
    return Group(selector, values, estimate(r["metrics"].get(COPIES, math.nan) for r in picked))


def compare_groups(question: Question, rows: list[dict[str, Any]]) -> Answer:
    """Every counted group against the best (by mean); on a generation-quality metric a group
    whose samples are mostly copies is not counted."""
    groups = [group(question, selector, rows) for selector in question.compare]
    sign = 1 if question.better == "lower" else -1
    counted = [g for g in groups if g.values and not excluded(question, g)]
    best = min(counted, key=lambda g: sign * g.estimate.mean) if counted else None
    differences = {} if best is None else {
        g.selector: compare(best.values, g.values) for g in counted if g is not best}
    return Answer(question, groups, best, differences, {})


def excluded(question: Question, g: Group) -> bool:
    """Whether a group is not counted: mostly copies, on a generation-quality metric."""
    return question.metric.startswith(GENERATION) and copies(g.copy_share)


def adjust(answers: list[Answer]) -> None:
    """Holm-adjust the p-values of every comparison of the study together."""
    keys = [(a, selector) for a in answers for selector in a.differences]
    adjusted = holm([a.differences[selector].p for a, selector in keys])
    for (a, selector), p in zip(keys, adjusted, strict=True):
        a.adjusted[selector] = p


def describe(answer: Answer) -> str:
    """One paragraph: each group, each difference from the best, and the verdict."""
    q = answer.question
    shown = []
    for g in answer.groups:
        flag = (f" ⚠ mostly copies of training images ({g.copy_share.mean:.0%})"
                if copies(g.copy_share) else "")
        if excluded(q, g):
            flag += ", not counted"
        shown.append(f"{g.selector}: {g.estimate} (seeds {sorted(g.values)}){flag}")
    text = "; ".join(shown) + "."
    if answer.best is None or not answer.differences:
        return f"{text} No verdict: fewer than two groups have results that count."
    parts, separated, untested = [], [], []
    for selector, d in answer.differences.items():
        p = answer.adjusted.get(selector, math.nan)
        if d.test == "none":
            untested.append(selector)
            parts.append(f"{selector} − best = {d.mean:+.3g} (no test: fewer than two seeds)")
            continue
        how = f"paired over {d.k} seeds" if d.test == "paired" else "Welch, seeds not shared"
        parts.append(f"{selector} − best = {d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}] "
                     f"({how}, Holm p = {p:.2g})")
        if p < ALPHA:
            separated.append(selector)
    best = answer.best.selector
    others = [s for s in answer.differences if s not in separated]
    if untested and len(untested) == len(answer.differences):
        verdict = "no verdict: fewer than two shared seeds"
    elif not others:
        verdict = (f"Best: **{best}** ({q.better} {q.metric} is better); every other group is "
                   f"separated from it (Holm-adjusted p < {ALPHA})")
    else:
        verdict = (f"not resolved: {best} has the {'lowest' if q.better == 'lower' else 'highest'}"
                   f" mean, but {', '.join(others)} {'is' if len(others) == 1 else 'are'} not "
                   "separated from it")
        if separated:
            verdict += f"; {', '.join(separated)} separated (worse)"
    return f"{text} Difference from the best: {'; '.join(parts)}. Verdict: {verdict}."


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per (cell, sampler, seed); every column once."""
    fixed = ["cell", "sampler", "seed", "fingerprint"]
    labels = [k for k in dict.fromkeys(k for r in rows for k in r["labels"]) if k not in fixed]
    keys = sorted({k for r in rows for k in r["metrics"]} - set(fixed) - set(labels))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*fixed, *labels, *keys])
        for r in rows:
            writer.writerow([r["cell"], r["sampler"], r["seed"], r["fingerprint"],
                             *(r["labels"].get(k, "") for k in labels),
                             *(r["metrics"].get(k, "") for k in keys)])


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as typed there)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _recipe_types(study: Study) -> tuple[dict[str, str], dict[str, str]]:
    """Each cell's model family (its degradation type) and parameterization type."""
    families, parameterizations = {}, {}
    for cell in study.cells():
        diffusion = cell_recipe(study, cell, study.spec.study.seeds[0]).diffusion
        families[cell.name] = diffusion.degradation.type
        parameterizations[cell.name] = diffusion.parameterization.type
    return families, parameterizations


def results_table(study: Study, lines: list[dict[str, Any]],
                  floors: list[tuple[list[str], list[dict[str, float]]]]) -> list[str]:
    """The markdown table: a line per (cell, sampler), copies flagged, then the floor rows."""
    metrics = list(dict.fromkeys([*study.spec.study.metrics, COPIES]))
    header = ["cell", "sampler", *metrics, "nfe", "train steps", "train s", "sampling s"]
    text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in lines:
        flag = " ⚠ copies" if copies(line[COPIES]) else ""
        values = [str(line[m]) for m in [*metrics, *EXTRA]]
        text.append(f"| {line['cell']}{flag} | {line['sampler']} | " + " | ".join(values) + " |")
    for cells, scores in floors:
        values = [str(floor_estimate(scores, m)) for m in metrics]
        if all(value == "–" for value in values):
            continue  # none of the table's metrics applies to real data of these cells
        text.append(f"| **floor**: real data of {', '.join(cells)} | – | "
                    + " | ".join(values) + " | – | – | – | – |")
    return text


def floor_estimate(scores: list[dict[str, float]], metric: str) -> Estimate:
    """A floor's estimate of ``metric`` over its seeds."""
    return estimate(score.get(metric, math.nan) for score in scores)


def write_report(study: Study, out: Path, report: Path, rows: list[dict[str, Any]],
                 floors: list[tuple[list[str], list[dict[str, float]]]],
                 fingerprints: dict[str, dict[int, str]], compute: dict[str, float]) -> Path:
    """RESULTS.md, results.csv, plots and one sample grid per cell into ``report``."""
    spec = study.spec.study
    report.mkdir(parents=True, exist_ok=True)
    write_csv(rows, report / "results.csv")
    lines = table(rows, spec.metrics)
    families, parameterizations = _recipe_types(study)
    plot_losses(study, out, parameterizations, report / "loss_curves.png")
    plotted = spec.plot_metric or spec.metrics[0]
    floor_values = [e.mean for _, scores in floors
                    if not math.isnan((e := floor_estimate(scores, plotted)).mean)]
    plot_quality(lines, families, plotted, floor_values, report / "quality_vs_nfe.png")
    grids = []
    for cell in study.cells():
        grid = run_dir(out, cell, spec.seeds[0]) / "samples.png"
        if grid.is_file():
            name = f"grid_{cell.name.replace('=', '-').replace(',', '_')}.png"
            shutil.copyfile(grid, report / name)
            grids.append((cell.name, name))
    text = [f"# Study: {spec.name}", "", spec.description, "",
            f"Base recipe `{spec.recipe}`; seeds {spec.seeds} (a seed fixes a cell's initial "
            f"weights, data order and sampling noise, so cells are compared seed by seed); "
            f"{spec.n} samples per evaluation; overrides applied to every cell: "
            f"{' '.join(f'`{o}`' for o in spec.set) or 'none'}. "
            "Values are mean ± 95 % CI (Student t) over seeds. Each question compares every "
            "group with the best by the paired difference over shared seeds (Welch where seeds "
            f"are not shared), Holm-adjusted across the study's {_count(study)} comparisons; "
            "the floor row scores real data with the same metrics at the same n (quality "
            "metrics: training images; memorization: held-out images, whose copy share is "
            f"{COPY_QUANTILE:.0%} by construction); `⚠ copies` marks samples of which more than "
            f"{MOSTLY_COPIES:.0%} are nearer a training image than {1 - COPY_QUANTILE:.0%} of "
            "held-out images are (never counted as quality).", "",
            f"Regenerate with `corediff study {_shown(study.path)} --report {_shown(report)}`; "
            f"on the machine that made this report ({os.cpu_count()} CPU cores) it took "
            f"{_minutes(compute['cpu'])} of CPU time (training {compute['train'] / 60:.1f} min "
            f"and evaluation {compute['evaluate'] / 60:.1f} min of wall time, summed over the "
            "runs).", ""]
    if study.spec.questions:
        answers = [compare_groups(q, rows) for q in study.spec.questions]
        adjust(answers)
        text += ["## Answers", ""]
        text += [f"- **{a.question.text}** {describe(a)}" for a in answers]
        text.append("")
    text += ["## Results", "", *results_table(study, lines, floors), ""]
    text += ["## Fingerprints", "", "Runs (cell × seed) are reused only with these; "
             "older results live in `stale/` of the study's output folder.", "",
             "| cell | " + " | ".join(f"seed {s}" for s in spec.seeds) + " |",
             "|" + "---|" * (len(spec.seeds) + 1)]
    text += [f"| {cell} | " + " | ".join(f"`{by_seed.get(s, '–')}`" for s in spec.seeds) + " |"
             for cell, by_seed in fingerprints.items()]
    text += ["", "## Plots", "", "![training loss](loss_curves.png)", "",
             "![quality versus network evaluations](quality_vs_nfe.png)", ""]
    if grids:
        text += ["## Samples (first seed)", ""]
        text += [f"`{cell}`: ![{cell}]({name})" for cell, name in grids]
        text.append("")
    path = report / "RESULTS.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path


def _minutes(seconds: float) -> str:
    return "an unrecorded amount" if math.isnan(seconds) else f"{seconds / 60:.1f} min"


def _count(study: Study) -> int:
    return sum(len(q.compare) - 1 for q in study.spec.questions)
