"""Training survives SIGKILL (resume gives the uninterrupted run's losses) and runs under DDP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import tomli_w

from corediff.engine import checkpoint
from corediff.engine.rundir import read_metrics

STEPS = 60


def write_recipe(path: Path, **train) -> Path:
    path.write_text(tomli_w.dumps({
        "data": {"type": "digits", "image_size": 8},
        "model": {"type": "unet", "preset": "tiny", "base_channels": 8,
                  "attention_resolutions": [], "dropout": 0.1},
        "diffusion": {
            "schedule": {"type": "cosine", "steps": 100}, "degradation": {"type": "gaussian"},
            "parameterization": {"type": "eps"}, "loss_weighting": {"type": "simple"},
            "sampler": {"type": "ddim", "steps": 5}, "prior": {"type": "normal"},
        },
        "train": {"steps": STEPS, "batch_size": 8, "log_every": 1, "checkpoint_every": 10,
                  "warmup_steps": 5, "label_dropout": 0.2, **train},
        "run": {"device": "cpu", "seed": 3},
    }))
    return path


def corediff(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "corediff", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def losses(run_dir: Path) -> list[tuple[str, ...]]:
    rows = read_metrics(run_dir / "metrics.csv")
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in rows]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    recipe = str(write_recipe(tmp_path / "recipe.toml"))
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = corediff("train", recipe, "--run-dir", str(full))
    victim = corediff("train", recipe, "--run-dir", str(killed))
    deadline = time.monotonic() + 120
    while checkpoint.find(killed / "checkpoints" / "last") is None:
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step = checkpoint.load_state(checkpoint.find(killed / "checkpoints" / "last"))["step"]
    assert step < STEPS, "the run finished before it could be killed"

    resumed = corediff("train", recipe, "--run-dir", str(killed), "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1][-2000:]
    assert reference.wait(timeout=300) == 0, reference.communicate()[1][-2000:]
    assert len(losses(full)) == STEPS
    assert losses(killed) == losses(full)
    for name in ("model", "ema"):
        assert (killed / "checkpoints/last" / f"{name}.safetensors").read_bytes() == (
            full / "checkpoints/last" / f"{name}.safetensors").read_bytes()


def test_two_process_ddp_trains_and_only_rank0_writes(tmp_path):
    recipe = str(write_recipe(tmp_path / "recipe.toml", steps=6, checkpoint_every=3,
                              log_every=2))
    run_dir = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "corediff", "train",
         recipe, "--run-dir", str(run_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row[0] for row in losses(run_dir)] == ["2", "4", "6"]  # one writer: no duplicates
    state = checkpoint.load_state(run_dir / "checkpoints" / "last")
    assert state["world_size"] == 2 and state["step"] == 6
    assert done.stdout.count("checkpoint:") == 1


def test_two_process_ddp_with_the_factor_cache_and_gradient_accumulation(tmp_path):
    """SVD cold diffusion under DDP with 2 micro-batches per step: each rank keeps its own
    factor cache (said once, by rank 0), gradients are synchronised only on the last
    micro-batch, and the run ends at its step count with finite losses."""
    recipe = tmp_path / "svd.toml"
    write_recipe(recipe, steps=4, checkpoint_every=4, log_every=2, grad_accum=2,
                 label_dropout=0.0)
    data = tomllib.loads(recipe.read_text())
    data["diffusion"] = {
        "schedule": {"type": "rank_linear", "steps": 8}, "degradation": {"type": "svd"},
        "parameterization": {"type": "residual"}, "loss_weighting": {"type": "simple"},
        "sampler": {"type": "cold_improved"}, "prior": {"type": "partial", "bank_size": 16},
    }
    recipe.write_text(tomli_w.dumps(data))
    run_dir = tmp_path / "ddp_svd"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "corediff", "train",
         str(recipe), "--run-dir", str(run_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(re.findall(r"factor cache: device memory, all \d+ images", done.stderr)) == 1
    rows = losses(run_dir)
    assert [row[0] for row in rows] == ["2", "4"]
    assert all(0 < float(row[1]) < 10 for row in rows)
    state = checkpoint.load_state(run_dir / "checkpoints" / "last")
    assert state["world_size"] == 2 and state["step"] == 4
