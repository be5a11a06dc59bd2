"""The statistics of a study: replicate = seed.

Every cell × seed shares its seed's initial weights, data order and sampling noise with the
other cells, so two groups measured on the same seeds are compared by their **paired**
differences (Student's paired t, ``scipy.stats.ttest_rel``); only where the groups share fewer
than two seeds and each has two or more values, by **Welch**'s unequal-variance t
(``scipy.stats.ttest_ind(equal_var=False)``). A question compares every group with the best
one; the p-values of all the study's comparisons are adjusted together by **Holm**'s
step-down method (Holm 1979), and a group is *separated* from the best when its adjusted
p-value is below :data:`ALPHA`. The interval shown is the unadjusted 95 % interval of the
difference (other − best).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Family-wise error rate of a study's verdicts.
ALPHA = 0.05


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
    """Mean ± Student-t 95 % half-width of the finite values."""
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


@dataclass(frozen=True)
class Difference:
    """``other − best`` over seeds: its mean, 95 % interval, p-value and how it was tested
    (``"paired"`` over ``k`` shared seeds, ``"welch"``, or ``"none"`` when untestable)."""

    mean: float
    low: float
    high: float
    p: float
    test: str
    k: int


def compare(best: Mapping[int, float], other: Mapping[int, float]) -> Difference:
    """The difference ``other − best`` of two groups' values by seed: paired over the shared
    seeds when there are two or more, else Welch over all values, else no test (p = NaN)."""
    from scipy import stats

    shared = sorted(set(best) & set(other))
    if len(shared) >= 2:
        diffs = [other[s] - best[s] for s in shared]
        mean, sd, k = sum(diffs) / len(diffs), _sd(diffs), len(diffs)
        if sd == 0:  # identical differences on every seed: exact, nothing to test
            return Difference(mean, mean, mean, 0.0 if mean else 1.0, "paired", k)
        half = float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
        p = float(stats.ttest_rel([other[s] for s in shared], [best[s] for s in shared]).pvalue)
        return Difference(mean, mean - half, mean + half, p, "paired", k)
    a, b = list(other.values()), list(best.values())
    if len(a) < 2 or len(b) < 2:
        mean = (sum(a) / len(a) - sum(b) / len(b)) if a and b else math.nan
        return Difference(mean, math.nan, math.nan, math.nan, "none", len(shared))
    va, vb = _sd(a) ** 2 / len(a), _sd(b) ** 2 / len(b)
    mean = sum(a) / len(a) - sum(b) / len(b)
    if va + vb == 0:
        return Difference(mean, mean, mean, 0.0 if mean else 1.0, "welch", 0)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(va + vb)
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Difference(mean, mean - half, mean + half, p, "welch", 0)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted): the i-th
    smallest of m p-values becomes max over j ≤ i of min(1, (m − j + 1)·p_(j))."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running, m = 0.0, len(order)
    for rank, (p, index) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def _sd(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
