"""A run directory cannot be damaged by mistakes, concurrency or signals: existing runs are
never overwritten silently, one writer per directory, system paths refused, --resume checks
the recipe, SIGTERM saves `last` and resumes exactly, non-finite weights are never saved,
recipe bounds are checked at validation."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch

import corediff
from corediff.cli import main
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer
from corediff.errors import TrainingError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart.toml"
TINY = ["train.steps=4", "train.batch_size=8", "train.log_every=2", "train.checkpoint_every=2",
        "train.warmup_steps=1", "data.image_size=8", "sample.n=2", "sample.batch_size=2",
        "diffusion.sampler.steps=3", "run.device='cpu'"]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _train(run_dir: Path, *extra: str, overrides: list[str] = TINY) -> int:
    return main(["train", str(QUICK), "--run-dir", str(run_dir), *_sets(overrides), *extra])


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    assert _train(run_dir) == 0
    return run_dir


# -- 1. never overwrite silently ----------------------------------------------------------
@pytest.mark.parametrize("removed", ["checkpoints/last/state.json", "checkpoints/last",
                                     "checkpoints", "recipe.toml"])
def test_a_new_run_refuses_a_directory_holding_a_run(run, removed, capsys):
    target = run / removed
    if target.is_dir():
        import shutil
        shutil.rmtree(target)
    else:
        target.unlink()
    before = _digest(run)
    assert _train(run) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "Traceback" not in err
    assert _digest(run) == before


def test_overwrite_starts_over(run, capsys):
    (run / "samples").mkdir(exist_ok=True)
    (run / "notes.txt").write_text("mine")  # not a run file: kept
    assert _train(run, "--overwrite", overrides=[*TINY, "train.steps=2"]) == 0
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 2 and (run / "notes.txt").read_text() == "mine"
    assert not (run / "samples").exists()
    assert _train(run, "--overwrite", "--resume") == 2
    assert "contradict" in capsys.readouterr().err


# -- 3. confinement -----------------------------------------------------------------------
@pytest.mark.parametrize("override", ["run.name='../escape'", "run.name='a/b'", "run.name=''",
                                      "run.name='..'", f"run.name='{'x' * 101}'",
                                      "run.root=''"])
def test_run_names_are_plain(override, capsys):
    assert main(["recipe", "validate", str(QUICK), "--set", override]) == 2
    assert "[run]" in capsys.readouterr().err


@pytest.mark.parametrize("place", ["/etc/corediff-run", "/usr/x", "/proc/x", "/", "/tmp"])
def test_system_locations_are_refused_before_anything_is_written(place, capsys):
    assert main(["train", str(QUICK), "--run-dir", place, *_sets(TINY)]) == 2
    assert "is a system location" in capsys.readouterr().err
    assert not Path(place, "checkpoints").exists()


def test_unwritable_run_directory_is_found_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # permissions do not stop root; this stops anyone
    assert _train(blocker / "run") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "cannot be written: Not a directory" in err or "is not a folder" in err


def test_a_recipe_writes_only_inside_its_run_directory(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    outside = {p for p in tmp_path.rglob("*")}
    overrides = [*TINY, f"run.root='{home / 'runs'}'", "run.name='mine'"]
    assert main(["run", str(QUICK), *_sets(overrides)]) == 0
    new = {p for p in tmp_path.rglob("*")} - outside
    assert new and all(home / "runs" / "mine" in (p, *p.parents) or p == home / "runs"
                       for p in new), sorted(map(str, new))


# -- 2. one writer per run directory -------------------------------------------------------
def _spawn(run_dir: Path, steps: int, *extra: str) -> subprocess.Popen:
    overrides = [*TINY, f"train.steps={steps}", "train.log_every=5",
                 f"train.checkpoint_every={10 * steps}"]
    return subprocess.Popen(
        [sys.executable, "-m", "corediff", "train", str(QUICK), "--run-dir", str(run_dir),
         *_sets(overrides), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_rows(run_dir: Path, rows: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    metrics = run_dir / "metrics.csv"
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"training did not log {rows} rows: {process.poll()}")


def test_a_second_trainer_is_refused_while_the_first_completes(tmp_path):
    run_dir = tmp_path / "shared"
    first = _spawn(run_dir, 200)
    _wait_for_rows(run_dir, 1, first)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, lock held, however slow the machine
    try:
        second = _spawn(run_dir, 200)
        _, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, err
    assert f"being written by another corediff process (pid {first.pid})" in err
    assert "Traceback" not in err
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 200
    assert _train(run_dir, "--resume", overrides=[*TINY, "train.steps=200"]) == 0  # lock freed


# -- 5. signals ------------------------------------------------------------------------------
def test_sigterm_saves_last_and_resumes_exactly(tmp_path):
    steps = 200
    reference = _spawn(tmp_path / "reference", steps)
    assert reference.wait(timeout=300) == 0
    stopped = _spawn(tmp_path / "stopped", steps)
    _wait_for_rows(tmp_path / "stopped", 2, stopped)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 143, err
    state = json.loads((tmp_path / "stopped" / "checkpoints" / "last" / "state.json").read_text())
    assert 10 <= state["step"] < steps
    assert f"stopped by SIGTERM at step {state['step']} of {steps}" in err
    resumed = _spawn(tmp_path / "stopped", steps, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    for name in ("model.safetensors", "ema.safetensors"):
        a = (tmp_path / "reference" / "checkpoints" / "last" / name).read_bytes()
        b = (tmp_path / "stopped" / "checkpoints" / "last" / name).read_bytes()
        assert a == b, name


def test_only_corediffs_own_leftovers_are_removed_at_the_next_start(run, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    junk = [run / "checkpoints" / f".last.corediff-{dead}-a1b2.tmp",
            run / f".metrics.csv.corediff-{dead}-x_9.tmp"]
    junk[0].mkdir()
    (junk[0] / "model.safetensors").write_bytes(b"half")
    junk[1].write_text("half")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    mine = [run / ".notes.tmp", run / "checkpoints" / ".last.1234.tmp",
            run / f".x.corediff-{os.getpid()}-live.tmp"]  # a user's, an old pattern, a live pid
    for path in mine:
        path.write_text("mine")
    link = run / f".y.corediff-{dead}-link.tmp"
    link.symlink_to(outside)
    assert _train(run, "--resume", overrides=[*TINY, "train.steps=6"]) == 0
    assert not any(p.exists() for p in junk)
    assert all(p.read_text() == "mine" for p in mine)
    assert link.is_symlink() and outside.read_text() == "keep"


# -- 4. resume checks the recipe -----------------------------------------------------------
def test_resume_applies_a_new_lr_and_logs_it(run):
    assert _train(run, "--resume", overrides=[*TINY, "train.steps=8", "train.lr=5e-4"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    last_lr = float(rows[-1].split(",")[2])
    from corediff.engine.trainer import lr_factor

    assert last_lr == pytest.approx(5e-4 * lr_factor(8, 1, 8, 0.05))  # not 1e-3 · 0.05
    log = [json.loads(line) for line in (run / "resume_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and log[-1]["forced"] is False
    assert log[-1]["changed"]["train.lr"] == [1e-3, 5e-4]
    stored = tomllib.loads((run / "checkpoints" / "last" / "recipe.toml").read_text())
    assert stored["train"]["lr"] == 5e-4


def test_resume_refuses_an_objective_change_with_a_diff(run, capsys):
    before = _digest(run)
    changed = [*TINY, "train.steps=8", "diffusion.loss_weighting.gamma=3.0", "model.preset='small'"]
    assert _train(run, "--resume", overrides=changed) == 2
    err = capsys.readouterr().err
    assert "diffusion.loss_weighting.gamma: 5.0 -> 3.0" in err
    assert "model.preset: 'tiny' -> 'small'" in err and "--force" in err
    assert "train.steps" not in err  # allowed to change: not listed
    assert _digest(run) == before
    forced = [*TINY, "train.steps=6", "diffusion.loss_weighting.gamma=3.0"]
    assert _train(run, "--resume", "--force", overrides=forced) == 0
    log = json.loads((run / "resume_log.jsonl").read_text().splitlines()[-1])
    assert log["forced"] is True and log["changed"]["diffusion.loss_weighting.gamma"] == [5.0, 3.0]


# -- 6. non-finite weights are never saved ---------------------------------------------------
def test_non_finite_weights_are_not_saved(tmp_path):
    recipe = corediff.load_recipe(QUICK, TINY)
    run_dir = RunDir(tmp_path / "nan")
    trainer = Trainer(corediff.build(recipe), run_dir, Context(torch.device("cpu")))
    trainer.fit_components()
    trainer.save()
    before = _digest(run_dir.root)
    next(trainer.model.parameters()).data[0] = float("nan")
    with pytest.raises(TrainingError, match="hold NaN or inf, so they were not saved"):
        trainer.save()
    assert _digest(run_dir.root) == before


# -- 8. bounds at validation ----------------------------------------------------------------
@pytest.mark.parametrize("override", [
    "diffusion.schedule.steps=100001", "data.image_size=5000", "train.batch_size=100000",
    "run.seed=-1", "run.seed=4294967296", "sample.seed=4294967296", "run.device='gpu'",
    "run.device='cuda:x'", "train.lr=inf", "train.lr=nan", "diffusion.loss_weighting.gamma=inf",
    "sample.label=10", "sample.label=-1", "diffusion.sampler.steps=100001", "sample.n=0",
])
def test_bounds_are_checked_at_validation(override, capsys):
    assert main(["recipe", "validate", str(QUICK), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("corediff: error:") and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--n", "0"], ["--n", "2000000"], ["--seed", "-1"],
                                  ["--seed", "x"]])
def test_command_line_numbers_are_bounded(run, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", str(run), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "outside" in err or "not an integer" in err
