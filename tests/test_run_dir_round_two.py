"""Run directories as clusters and shared folders treat them (issue 23): SLURM's SIGTERM to
the whole process group with loader workers, restarts before the first checkpoint, planted
symlinks and special files, a crash while ``best`` is updated, cleanup of leftovers only
corediff made, readers racing a checkpoint swap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_engine_resume import write_recipe

from corediff.engine import checkpoint
from corediff.engine.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def corediff(*args: str) -> subprocess.Popen:
    """``python -m corediff ARGS`` in a new session (its own process group, as under SLURM)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "corediff", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_rows(run_dir: Path, rows: int, process: subprocess.Popen) -> None:
    """Wait until metrics.csv holds ``rows`` well-formed rows."""
    deadline = time.monotonic() + 120
    metrics = run_dir / "metrics.csv"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        if metrics.exists() and len(read_metrics(metrics)) >= rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {rows} metrics rows in {run_dir}")


def same_weights(a: Path, b: Path) -> bool:
    return all((a / "checkpoints/last" / f"{name}.safetensors").read_bytes()
               == (b / "checkpoints/last" / f"{name}.safetensors").read_bytes()
               for name in ("model", "ema"))


# -- 1. SLURM's SIGTERM reaches the whole process group, loader workers included -------------
def test_group_sigterm_with_two_workers_saves_last_and_resumes_exactly(tmp_path):
    recipe = str(write_recipe(tmp_path / "recipe.toml", num_workers=2, checkpoint_every=1000))
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    reference = corediff("train", recipe, "--run-dir", str(full))
    victim = corediff("train", recipe, "--run-dir", str(stopped))
    wait_for_rows(stopped, 3, victim)
    os.killpg(victim.pid, signal.SIGTERM)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "killed by signal" not in err
    step = checkpoint.load_state(stopped / "checkpoints" / "last")["step"]
    assert 3 <= step < 60
    resumed = corediff("train", recipe, "--run-dir", str(stopped), "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1][-2000:]
    assert reference.wait(timeout=300) == 0, reference.communicate()[1][-2000:]
    assert same_weights(full, stopped)


# -- 2. a run stopped before its first checkpoint restarts ------------------------------------
def readme_resume_flag(run_dir: Path) -> list[str]:
    """The ``$resume`` of the README's SLURM script for ``run_dir``, computed by bash."""
    line = next(text.strip() for text in (ROOT / "README.md").read_text().splitlines()
                if text.strip().startswith("resume="))
    script = f'run="$1"\n{line}\necho $resume'
    done = subprocess.run(["bash", "-c", script, "bash", str(run_dir)], capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def test_a_run_killed_before_its_first_checkpoint_restarts_with_the_readme_script(tmp_path):
    recipe = str(write_recipe(tmp_path / "recipe.toml", steps=20, checkpoint_every=1000))
    run_dir = tmp_path / "run"
    assert readme_resume_flag(run_dir) == []  # the first submission starts a new run
    victim = corediff("train", recipe, "--run-dir", str(run_dir))
    wait_for_rows(run_dir, 2, victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert checkpoint.find(run_dir / "checkpoints" / "last") is None
    flag = readme_resume_flag(run_dir)
    assert flag == ["--resume"]
    again = corediff("train", recipe, "--run-dir", str(run_dir), *flag)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert "no checkpoint in" in err and "starting from step 0" in err
    assert [int(row["step"]) for row in read_metrics(run_dir / "metrics.csv")] == list(
        range(1, 21))
    assert checkpoint.load_state(run_dir / "checkpoints" / "last")["step"] == 20
