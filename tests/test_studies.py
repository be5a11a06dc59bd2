"""Studies end to end at CI size: a 2 × 2 study (two weightings × two seeds, two samplers)
writes RESULTS.md with its question answered, a CSV, plots and grids; a killed study resumes
to the same numbers; submitit's local executor runs the cells; malformed study files exit 2
with one clear block; the confidence interval is Student's t."""

from __future__ import annotations

import csv
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corediff.cli import main
from corediff.studies.report import estimate

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
    assert "**Does min-SNR weighting beat simple?** weighting=simple:" in text
    assert ("clear: the 95 % intervals do not overlap" in text
            or "not resolved: the 95 % intervals overlap" in text)
    assert "| weighting=min_snr | ddpm10 |" in text and "| 10 |" in text  # nfe column
    rows = _rows(tiny / "results.csv")
    assert len(rows) == 2 * 2 * 2
    assert {r["sampler"] for r in rows} == {"ddim5", "ddpm10"}
    assert all(float(r["digits.fd"]) > 0 for r in rows)
    for name in ("loss_curves.png", "quality_vs_nfe.png", "grid_weighting-simple.png"):
        assert (tiny / name).stat().st_size > 1000


def test_running_again_skips_finished_cells(tiny):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*.safetensors")}
    clock = time.perf_counter()
    assert main(["study", str(DATA / "tiny.toml"), "--out", str(tiny)]) == 0
    assert time.perf_counter() - clock < 10
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*.safetensors")} == before


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
])
def test_malformed_study_files_exit_2_with_one_block(tmp_path, capsys, change, message):
    study = _copy_study(tmp_path, replace=change)
    assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corediff: error: ") and "Traceback" not in err
    assert message in err, err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_a_missing_or_binary_study_file(tmp_path, capsys):
    assert main(["study", str(tmp_path / "none.toml")]) == 2
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00junk")
    assert main(["study", str(tmp_path / "binary.toml")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "cannot be read" in err


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
