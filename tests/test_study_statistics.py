"""A study's statistics against scipy and a hand-worked example: paired differences over
shared seeds (``ttest_rel``), Welch where seeds are not shared (``ttest_ind(equal_var=False)``),
Holm's step-down adjustment, and the verdicts RESULTS.md writes from them."""

from __future__ import annotations

import math
import secrets

import pytest
from scipy import stats

from corediff.studies.config import Question
from corediff.studies.report import adjust, compare_groups, describe
from corediff.studies.statistics import compare, holm


def _fresh() -> secrets.SystemRandom:
    return secrets.SystemRandom()


def test_paired_difference_matches_ttest_rel_on_fresh_data():
    rng = _fresh()
    for k in (2, 3, 5, 9):
        best = {s: rng.gauss(20, 5) for s in range(k)}
        other = {s: best[s] + rng.gauss(1, 0.5) for s in range(k)}
        d = compare(best, other)
        ours = stats.ttest_rel(list(other.values()), list(best.values()))
        assert d.test == "paired" and d.k == k
        assert d.p == pytest.approx(ours.pvalue, rel=1e-12)
        low, high = ours.confidence_interval(0.95)
        assert (d.low, d.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_welch_where_seeds_are_not_shared_matches_ttest_ind():
    rng = _fresh()
    for a, b in ((2, 3), (4, 4), (3, 7)):
        best = {s: rng.gauss(10, 2) for s in range(a)}
        other = {100 + s: rng.gauss(12, 4) for s in range(b)}
        d = compare(best, other)
        ours = stats.ttest_ind(list(other.values()), list(best.values()), equal_var=False)
        assert d.test == "welch" and d.p == pytest.approx(ours.pvalue, rel=1e-12)
        low, high = ours.confidence_interval(0.95)
        assert (d.low, d.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_fewer_than_two_values_give_no_test():
    d = compare({0: 1.0, 1: 2.0}, {0: 3.0})  # one shared seed, one value in the other group
    assert d.test == "none" and math.isnan(d.p)


def test_a_hand_worked_paired_example():
    # differences 1, 2, 3: mean 2, sd 1, se 1/√3, t = 2√3 = 3.4641 on 2 df, two-sided p 0.0742
    d = compare({0: 10.0, 1: 20.0, 2: 30.0}, {0: 11.0, 1: 22.0, 2: 33.0})
    assert d.mean == 2 and d.p == pytest.approx(0.07418, abs=1e-5)
    assert d.high - d.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t_.975,2 = 4.3027


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.5, math.nan, 0.9])[1])  # NaN stays NaN, not counted
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def _rows(values: dict[str, list[float]], copy_share: dict[str, float] | None = None,
          metric: str = "digits.fd"):
    return [{"labels": {"cell": cell, "sampler": "s"}, "seed": seed,
             "metrics": {metric: v, "memorization.copy_share":
                         (copy_share or {}).get(cell, 0.0)}}
            for cell, vs in values.items() for seed, v in enumerate(vs)]


def _answer(values, copy_share=None, better="lower", metric="digits.fd"):
    question = Question(text="q", metric=metric, better=better,
                        compare=[f"cell={c},sampler=s" for c in values])
    answer = compare_groups(question, _rows(values, copy_share, metric))
    adjust([answer])
    return answer, describe(answer)


def test_paired_seeds_resolve_what_overlapping_intervals_do_not():
    # seed effects are large, the difference is small and constant: independent intervals
    # overlap, the paired difference separates (the svd_questions rank question's situation)
    base = [10.0, 30.0, 50.0]
    answer, text = _answer({"a": base, "b": [v + 2 + 0.1 * i for i, v in enumerate(base)]})
    assert answer.best.selector == "cell=a,sampler=s"
    assert "Best: **cell=a,sampler=s**" in text and "paired over 3 seeds" in text


def test_best_is_not_named_when_a_group_is_not_separated():
    answer, text = _answer({"a": [10.0, 12.0, 11.0], "b": [10.5, 11.0, 12.5],
                            "c": [40.0, 42.0, 41.0]})
    assert "Best:" not in text and "not resolved" in text
    assert "cell=c,sampler=s separated (worse)" in text


def test_copies_are_flagged_and_not_counted_as_generation_quality():
    values = {"a": [5.0, 6.0, 5.5], "b": [20.0, 21.0, 22.0], "c": [30.0, 33.0, 31.0]}
    answer, text = _answer(values, copy_share={"a": 0.99})
    assert answer.best.selector == "cell=b,sampler=s" and list(answer.differences) == [
        "cell=c,sampler=s"]  # a is neither best nor compared
    assert ("cell=a,sampler=s: 5.500 ± 1.242 (seeds [0, 1, 2]) ⚠ mostly copies of training "
            "images (99%), not counted") in text


def test_copies_still_count_on_restoration_metrics():
    # restoration scores held-out images, not generated ones: flagged, but counted
    answer, text = _answer({"a": [30.0, 31.0, 30.5], "b": [20.0, 21.0, 22.0]},
                           copy_share={"a": 0.99}, better="higher",
                           metric="restoration.sampled.psnr")
    assert answer.best.selector == "cell=a,sampler=s" and "not counted" not in text


def test_one_seed_gives_no_verdict():
    _, text = _answer({"a": [1.0], "b": [2.0]})
    assert "no verdict" in text and "Best:" not in text
