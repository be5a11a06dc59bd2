"""Studies end to end at CI size: a 2 × 2 study (two weightings × two seeds, two samplers)
writes RESULTS.md with its question answered, a CSV, plots and grids; a killed study resumes
to the same numbers; submitit's local executor runs the cells; malformed study files exit 2
with one clear block; the confidence interval is Student's t."""

from __future__ import annotations

import csv
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from corediff.cli import main
from corediff.studies.config import load_study
from corediff.studies.runner import eval_fingerprint, run_fingerprint
from corediff.studies.statistics import estimate

DATA = Path(__file__).resolve().parent / "data" / "study"


def _copy_study(tmp_path: Path, extra: str = "", replace: tuple[str, str] = ("", "")) -> Path:
    shutil.copy(DATA / "base.toml", tmp_path / "base.toml")
    text = (DATA / "tiny.toml").read_text().replace(*replace) + extra
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    assert main(["study", str(DATA / "tiny.toml"), "--out", str(out)]) == 0
    return out


def test_a_2x2_study_writes_its_report(tiny):
    text = (tiny / "RESULTS.md").read_text()
    assert "**Does min-SNR weighting beat simple?** weighting=simple,sampler=ddim5:" in text
    assert "paired over 2 seeds, Holm p = " in text and "Verdict: " in text
    assert "| weighting=min_snr | ddpm10 |" in text and "| 10 |" in text  # nfe column
    assert "| **floor**: real data of weighting=simple, weighting=min_snr | – |" in text
    assert "## Fingerprints" in text and "training " in text and " min of wall time" in text
    rows = _rows(tiny / "results.csv")
    assert len(rows) == 2 * 2 * 2
    assert {r["sampler"] for r in rows} == {"ddim5", "ddpm10"}
    assert all(float(r["digits.fd"]) > 0 and 0 <= float(r["memorization.copy_share"]) <= 1
               for r in rows)
    with (tiny / "results.csv").open() as handle:
        header = next(csv.reader(handle))
    assert len(header) == len(set(header))  # each column once
    for name in ("loss_curves.png", "quality_vs_nfe.png", "grid_weighting-simple.png"):
        assert (tiny / name).stat().st_size > 1000


def test_runs_are_tagged_for_trackers_by_study_and_cell(tiny):
    stored = tomllib.loads((tiny / "weighting-min_snr" / "seed1" / "recipe.toml").read_text())
    assert stored["run"]["tags"] == {"study": "tiny", "cell": "weighting=min_snr"}
    assert stored["run"]["seed"] == 1


def test_fingerprints_are_pinned():
    """A recipe key added with a default changes every study's fingerprints, so every run
    counts as changed and trains again: a key that changes no result (a timeout, a tracker)
    goes into runner.NO_EFFECT; one that does changes these pins, on purpose."""
    study = load_study(DATA / "tiny.toml")
    cell = study.cells()[0]
    assert run_fingerprint(study, cell, 0) == "9f1f41a6130d630d"
    assert eval_fingerprint(study, cell, 0, study.spec.samplers[0]) == "ce8bda2ea77f5301"


def test_running_again_reuses_every_run_and_evaluation(tiny):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*.safetensors")}
    evals = {p: p.stat().st_mtime_ns for p in tiny.rglob("eval_*.json")}
    assert main(["study", str(DATA / "tiny.toml"), "--out", str(tiny)]) == 0
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*.safetensors")} == before
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("eval_*.json")} == evals
    assert not (tiny / "stale").exists()


def _mtimes(out: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob(pattern)}


def test_an_edited_study_reruns_what_changed_and_sets_the_old_aside(tmp_path, capsys):
    study = _copy_study(tmp_path, replace=("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "out"
    assert main(["study", str(study), "--out", str(out)]) == 0
    weights = _mtimes(out, "*/seed0/checkpoints/last/*.safetensors")
    evals = _mtimes(out, "*/seed0/eval_*.json")
    # min_snr cells train longer; the simple cells and every evaluation setting are unchanged
    study.write_text(study.read_text().replace(
        "min_snr = [\"diffusion.loss_weighting.type='min_snr'\"]",
        "min_snr = [\"diffusion.loss_weighting.type='min_snr'\", \"train.steps=8\"]"))
    assert main(["study", str(study), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "weighting=min_snr seed 0: its settings changed" in err
    assert "weighting=simple seed 0: its settings changed" not in err
    after = _mtimes(out, "*/seed0/checkpoints/last/*.safetensors")
    simple = {k: v for k, v in weights.items() if k.startswith("weighting-simple")}
    assert simple and all(after[k] == v for k, v in simple.items())  # reused
    assert all(after[k] != v for k, v in weights.items() if k.startswith("weighting-min_snr"))
    after_evals = _mtimes(out, "*/seed0/eval_*.json")
    assert all(after_evals[k] == v for k, v in evals.items() if "simple" in k)
    assert all(after_evals[k] != v for k, v in evals.items() if "min_snr" in k)
    old = list((out / "stale").glob("weighting-min_snr/seed0@*/checkpoints/last/state.json"))
    assert len(old) == 1 and json.loads(old[0].read_text())["step"] == 6  # kept aside
    rows = {(r["cell"], r["sampler"]): r for r in _rows(out / "results.csv")}
    assert rows[("weighting=min_snr", "ddim5")]["train_steps"] == "8.0"
    assert rows[("weighting=simple", "ddim5")]["train_steps"] == "6.0"
    assert "| weighting=min_snr | ddim5 |" in (out / "RESULTS.md").read_text()


def test_an_old_fingerprint_is_never_shown(tmp_path):
    study = _copy_study(tmp_path, replace=("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "out"
    assert main(["study", str(study), "--out", str(out)]) == 0
    first = {(r["cell"], r["sampler"]): r["digits.fd"] for r in _rows(out / "results.csv")}
    study.write_text(study.read_text().replace("n = 16", "n = 12"))
    # the runs are reused, every evaluation is made again at n = 12 ...
    assert main(["study", str(study), "--out", str(out), "--only", "sampler=ddim5"]) == 0
    rows = _rows(out / "results.csv")
    assert {r["sampler"] for r in rows} == {"ddim5"}  # ddpm10's n = 16 results are not shown
    for r in rows:
        folder = out / r["cell"].replace("=", "-") / "seed0"
        report = json.loads((folder / "eval_ddim5.json").read_text())
        assert report["n"] == 12
        assert r["digits.fd"] != first[(r["cell"], r["sampler"])]
    assert len(list((out / "stale").rglob("eval_ddim5@*.json"))) == 2  # the n = 16 ones
    assert len(list(out.rglob("eval_ddpm10.json"))) == 2  # still there, not shown


def test_hand_edited_records_with_the_current_fingerprint_still_report(tmp_path, tiny):
    out = tmp_path / "out"
    shutil.copytree(tiny, out)
    record = out / "weighting-simple" / "seed0" / "study.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "train_seconds": "x", "train_steps": None}))
    evaluation = out / "weighting-simple" / "seed0" / "eval_ddim5.json"
    evaluation.write_text(json.dumps({**json.loads(evaluation.read_text()), "sampler": 3,
                                      "eval_seconds": "soon", "digits": "x"}))
    assert main(["study", str(DATA / "tiny.toml"), "--out", str(out), "--dry-run"]) == 0
    assert main(["study", str(DATA / "tiny.toml"), "--out", str(out)]) == 0
    rows = {(r["cell"], r["sampler"], r["seed"]): r for r in _rows(out / "results.csv")}
    assert rows[("weighting=simple", "ddim5", "0")]["digits.fd"] == ""  # not a number: absent
    assert "| weighting=simple | ddim5 |" in (out / "RESULTS.md").read_text()


def test_dry_run_lists_the_work_and_runs_nothing(tmp_path, capsys):
    study = _copy_study(tmp_path)
    out = tmp_path / "out"
    assert main(["study", str(study), "--out", str(out), "--dry-run",
                 "--only", "weighting=simple"]) == 0
    text = capsys.readouterr().out
    assert "weighting=simple seed 0: train (6 steps of 16" in text
    assert "weighting=simple seed 1: train" in text and "weighting=min_snr" not in text
    assert "    ddpm10: evaluate (16 samples)" in text
    assert "estimated cost: 12 training steps and 4 evaluations of 16 samples" in text
    assert not out.exists()


def test_two_jobs_run_the_cells_in_parallel_processes(tmp_path, tiny):
    out = tmp_path / "out"
    assert main(["study", str(DATA / "tiny.toml"), "--out", str(out), "--jobs", "2"]) == 0
    ours = {(r["cell"], r["sampler"], r["seed"]): r for r in _rows(out / "results.csv")}
    theirs = {(r["cell"], r["sampler"], r["seed"]): r for r in _rows(tiny / "results.csv")}
    assert ours.keys() == theirs.keys()
    assert all(ours[k]["fingerprint"] == theirs[k]["fingerprint"] for k in ours)


def test_a_killed_study_resumes_to_the_same_numbers(tmp_path):
    longer = ("seeds = [0, 1]", "seeds = [0]")
    study = _copy_study(tmp_path, replace=longer)
    study.write_text(study.read_text().replace("set = []\n", 'set = ["train.steps=120"]\n', 1))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(["study", str(study), "--out", str(clean)]) == 0
    process = subprocess.Popen([sys.executable, "-m", "corediff", "study", str(study), "--out",
                                str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = killed / "weighting-simple" / "seed0" / "checkpoints" / "last" / "state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "RESULTS.md").exists()
    assert main(["study", str(study), "--out", str(killed)]) == 0
    a, b = _rows(clean / "results.csv"), _rows(killed / "results.csv")
    assert [r["digits.fd"] for r in a] == [r["digits.fd"] for r in b]


def test_submitit_local_launcher_runs_the_cells(tmp_path):
    pytest.importorskip("submitit")
    study = _copy_study(tmp_path, replace=("seeds = [0, 1]", "seeds = [0]"))
    assert main(["study", str(study), "--out", str(tmp_path / "out"),
                 "--launcher", "submitit-local"]) == 0
    assert len(_rows(tmp_path / "out" / "results.csv")) == 2 * 2
    assert list((tmp_path / "out" / "submitit").glob("*_log.out"))


@pytest.mark.parametrize(("change", "message"), [
    (("name = \"tiny\"", "nam = \"tiny\""), "[study] nam: unknown key. Did you mean 'name'?"),
    (("name = \"tiny\"", "name = \"../x\""), "[study] name:"),
    (("recipe = \"base.toml\"", "recipe = \"missing.toml\""), "[study] recipe:"),
    (("seeds = [0, 1]", "seeds = []"), "[study] seeds:"),
    (("seeds = [0, 1]", "seeds = [-1]"), "[study.seeds] 0: Input should be greater than or equal"),
    (("n = 16", "n = 1"), "[study] n:"),
    (("n = 16", "n = \"many\""), "[study] n:"),
    (("\"digits.fd\", ", "\"digit.fd\", "), "unknown metric 'digit.fd'"),
    (("better = \"lower\"", "better = \"smaller\""), "[questions.0] better:"),
    (("[axes.weighting]", "[axes.weighting]\n[cells]"), "cells: Input should be a valid list"),
    (("n = 16", "n = = 16"), "TOML syntax error"),
    (("[[samplers]]\nname = \"ddpm10\"", "[[samplers]]\nname = \"ddim5\""), "must be unique"),
    (("simple = []\nmin_snr = [\"diffusion.loss_weighting.type='min_snr'\"]",
      "simple = []\nmin_snr = [\"diffusion.loss_weighting.type='min_snrr'\"]"),
     "unknown loss_weighting 'min_snrr'. Did you mean 'min_snr'?"),
    (("set = [\"diffusion.sampler.type='ddpm'\", \"diffusion.sampler.steps=10\"]",
      "set = [\"diffusion.sampler.stesp=10\"]"), "cell 'weighting=simple' with sampler 'ddpm10'"),
    (("[axes.weighting]", "[[cells]]\nname = \"x\"\n[axes.weighting]"), "not both"),
    (("\"memorization.copy_share\"", "\"memorization.copy_shar\""),
     "unknown metric 'memorization.copy_shar'. Did you mean 'memorization.copy_share'?"),
    (("metric = \"digits.fd\"", "metric = \"digits.fid\""),
     "[questions.0] metric: Value error, unknown metric 'digits.fid'. Did you mean 'digits.fd'?"),
    (("\"weighting=simple,sampler=ddim5\"", "\"weighting=simple,sampler=ddim05\""),
     "[questions.0] compare: selector 'weighting=simple,sampler=ddim05': sampler has no value "
     "'ddim05'. Did you mean 'ddim5'?"),
    (("\"weighting=simple,sampler=ddim5\"", "\"weightin=simple\""),
     "'weightin' is not a label. Did you mean 'weighting'?"),
    (("\"weighting=simple,sampler=ddim5\"", "\"weighting=simple\""),
     "[questions.0] compare: group 'weighting=simple' pools 2 (cell, sampler) rows; name one "
     "cell and sampler, or set aggregate = 'mean'"),
    (("name = \"ddpm10\"", "name = \"ddpm10\"\ncells = [\"weighting=min_snrr\"]"),
     "[samplers.1] cells: selector 'weighting=min_snrr': weighting has no value 'min_snrr'"),
    (("[axes.weighting]", "[axes.\"../../escape\"]"), "axis or level name '../../escape' must be "
     "plain"),
    (("simple = []", "\"..\" = []"), "axis or level name '..' must be plain"),
])
def test_malformed_study_files_exit_2_with_one_block(tmp_path, capsys, change, message):
    study = _copy_study(tmp_path, replace=change)
    assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corediff: error: ") and "Traceback" not in err
    assert message in err, err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_pooling_with_an_aggregate_averages_each_seed(tmp_path, tiny):
    study = _copy_study(tmp_path, replace=("\"weighting=simple,sampler=ddim5\", "
                                           "\"weighting=min_snr,sampler=ddim5\"]",
                                           "\"weighting=simple\", \"weighting=min_snr\"]\n"
                                           "aggregate = \"mean\""))
    assert main(["study", str(study), "--out", str(tiny), "--report", str(tmp_path)]) == 0
    rows = [r for r in _rows(tiny / "results.csv") if r["weighting"] == "simple"]
    mean = sum(float(r["digits.fd"]) for r in rows) / len(rows)  # 2 samplers × 2 seeds
    assert f"weighting=simple: {mean:.1f} ± " in (tmp_path / "RESULTS.md").read_text()


@pytest.mark.parametrize(("only", "message"), [
    ("weighting=simplex", "--only: selector 'weighting=simplex': weighting has no value"),
    ("sampler", "--only: selector 'sampler': 'sampler' is not a label"),
])
def test_only_must_select_something(tmp_path, capsys, only, message):
    assert main(["study", str(_copy_study(tmp_path)), "--only", only]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_or_binary_study_file(tmp_path, capsys):
    assert main(["study", str(tmp_path / "none.toml")]) == 2
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00junk")
    assert main(["study", str(tmp_path / "binary.toml")]) == 2
    err = capsys.readouterr().err
    assert "none.toml' not found" in err and "binary.toml' is not UTF-8 text" in err


def test_the_interval_is_students_t():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for k in (2, 3, 7):
        values = [rng.gauss(3, 2) for _ in range(k)]
        ours = estimate(values)
        low, high = scipy_stats.t.interval(0.95, k - 1, loc=ours.mean,
                                           scale=scipy_stats.sem(values))
        assert ours.low == pytest.approx(low) and ours.high == pytest.approx(high)
    assert str(estimate([5.0, 5.0, 5.0])) == "5" and estimate([1.0]).k == 1
