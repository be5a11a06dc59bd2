"""Run directories as clusters and shared folders treat them (issue 23): SLURM's SIGTERM to
the whole process group with loader workers, restarts before the first checkpoint, planted
symlinks and special files, a crash while ``best`` is updated, cleanup of leftovers only
corediff made, readers racing a checkpoint swap."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine_resume import write_recipe

import corediff as corediff_api
from corediff import data_cache
from corediff.cli import main
from corediff.engine import checkpoint
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir, read_metrics
from corediff.engine.trainer import Trainer

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


# -- 3. links and special files planted at a run's names ------------------------------------
TINY = ["train.steps=4", "train.batch_size=8", "train.log_every=2", "train.checkpoint_every=2",
        "train.sample_every=2", "train.warmup_steps=1", "data.image_size=8", "sample.n=2",
        "sample.batch_size=2", "diffusion.sampler.steps=3", "run.device='cpu'"]
QUICK = ROOT / "recipes" / "quickstart.toml"
GRID = "generated/ddim_seed0.png"
#: name -> (file or dir, the command that writes it)
PLANTED = {".lock": "file", "recipe.toml": "file", "metrics.csv": "file",
           "resume_log.jsonl": "file", "samples.png": "file", "samples/step_0000004.png": "file",
           "samples/step_0000006.png": "file", "checkpoints": "dir", "checkpoints/last": "dir",
           "checkpoints/best": "dir", "samples": "dir", "tb": "dir", "generated": "dir",
           GRID: "file"}


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished tiny run with sample grids and a generated grid."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", str(QUICK), "--run-dir", str(run_dir), *sets(TINY)]) == 0
    assert main(["sample", str(run_dir)]) == 0
    assert (run_dir / GRID).is_file() and (run_dir / "samples/step_0000004.png").is_file()
    return run_dir


def tree_digest(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (files or folders), by path."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))
             if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def plant(path: Path, what: str, outside: Path) -> None:
    """A symbolic link to ``outside``, a FIFO, a socket or a device at ``path``."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if what == "symlink":
        path.symlink_to(outside)
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "socket":
        os.mknod(path, stat.S_IFSOCK | 0o600)
    else:
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device file needs CAP_MKNOD")


class Hung(Exception):
    """A call blocked (not an OSError: nothing in corediff may catch it)."""


def unblock(folder: Path) -> None:
    """Give every FIFO under ``folder`` a partner for a moment, so an open() or read() blocked
    on one returns (native code retries an interrupted open)."""
    fds = [os.open(p, os.O_RDWR | os.O_NONBLOCK) for p in folder.rglob("*")
           if stat.S_ISFIFO(os.lstat(p).st_mode)]
    time.sleep(0.5)
    for fd in fds:
        os.close(fd)


@contextlib.contextmanager
def within(seconds: int, folder: Path):
    """Fail (instead of hanging) when the block takes longer than ``seconds``: SIGALRM goes
    to the main thread itself, then the FIFOs under ``folder`` are unblocked."""
    def expired(signum, frame):
        raise Hung(f"blocked for {seconds} s")

    def wake() -> None:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
        unblock(folder)

    previous = signal.signal(signal.SIGALRM, expired)
    timer = threading.Timer(seconds, wake)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("what", ["symlink", "fifo", "socket", "device"])
@pytest.mark.parametrize("name", list(PLANTED))
def test_a_planted_link_or_special_file_is_refused_and_nothing_outside_changes(
        base_run, tmp_path, name, what, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(base_run, run_dir, symlinks=True)
    outside_file, outside_dir = tmp_path / "outside.txt", tmp_path / "outside"
    outside_file.write_text("a user's file\n")
    outside_dir.mkdir()
    (outside_dir / "keep.png").write_bytes(b"a user's image")
    before = tree_digest(outside_file, outside_dir)
    planted = run_dir / name
    plant(planted, what, outside_dir if PLANTED[name] == "dir" else outside_file)
    capsys.readouterr()
    command = ["sample", str(run_dir)] if name.startswith("generated") else [
        "train", str(QUICK), "--run-dir", str(run_dir), "--resume", *sets([*TINY,
                                                                          "train.steps=6"])]
    with within(30, run_dir):
        code = main(command)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"'{planted}'" in err and "Traceback" not in err
    assert tree_digest(outside_file, outside_dir) == before
    assert sorted(p.name for p in outside_dir.iterdir()) == ["keep.png"]


# -- 5. --overwrite deletes only a corediff run's files --------------------------------------
def test_overwrite_refuses_a_folder_that_holds_no_run(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "samples").mkdir(parents=True)
    (folder / "samples" / "photo.png").write_bytes(b"a user's image")
    (folder / "tb").mkdir()
    before = tree_digest(folder)
    command = ["train", str(QUICK), "--run-dir", str(folder), "--overwrite", *sets(TINY)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "but no corediff run" in err and "Traceback" not in err
    (folder / ".lock").unlink()  # the run's own lock file, empty
    assert tree_digest(folder) == before and (folder / "tb").is_dir()
    assert main(["train", str(QUICK), "--run-dir", str(tmp_path / "new"), "--overwrite",
                 *sets(TINY)]) == 0  # an empty (here: missing) folder is fine


# -- 4. a kill at any write of the best-checkpoint update ------------------------------------
MUTATIONS = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "os.chmod",
             "os.utime", "shutil.rmtree", "os.truncate"}


def writes(event: str, args: tuple) -> bool:
    """Whether an audit event changes the file system (opens for writing included)."""
    if event == "open":
        mode, flags = args[1], args[2]
        return (mode is not None and any(c in str(mode) for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) != 0)
    return event in MUTATIONS


def save_killed_at(trainer, run_dir: Path, kill_at: int) -> bool:
    """Save in a forked child that SIGKILLs itself before its ``kill_at``-th file-system
    write; True when it was killed (False: the save had fewer writes)."""
    trainer.run = RunDir(run_dir)
    pid = os.fork()
    if pid == 0:  # the child: count writes, die at the chosen one
        count = [0]

        def hook(event: str, args: tuple) -> None:
            if writes(event, args):
                count[0] += 1
                if count[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        sys.addaudithook(hook)
        trainer.save()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def recorded(path: Path) -> tuple[int, float]:
    state = checkpoint.load_state(checkpoint.find(path))
    return state["step"], state["best"]


def test_a_kill_at_every_write_of_the_best_update_leaves_best_consistent(tmp_path):
    recipe = corediff_api.load_recipe(QUICK, TINY)
    base = tmp_path / "base"
    trainer = Trainer(corediff_api.build(recipe), RunDir(base), Context(torch.device("cpu")))
    trainer.fit_components()
    trainer.smoothed = 2.0
    trainer.save()  # step 0: best = last, score 2.0
    trainer.step, trainer.smoothed = 1, 1.0  # step 1 improves: best/ is rewritten
    kill_at, killed = 1, True
    while killed:
        run_dir = tmp_path / f"kill{kill_at}"
        shutil.copytree(base, run_dir)
        killed = save_killed_at(trainer, run_dir, kill_at)
        last, best = run_dir / "checkpoints/last", run_dir / "checkpoints/best"
        if recorded(last)[1] == 1.0:  # last records the new best: best/ must hold it
            assert recorded(best) == (1, 1.0), kill_at
        checkpoint.reconcile(last, best)
        assert recorded(last)[1] == recorded(best)[1], kill_at
        assert recorded(best)[0] <= recorded(last)[0], kill_at
        kill_at += 1
    assert kill_at > 10 and recorded(last) == recorded(best) == (1, 1.0)


# -- 7. a killed `data prepare` leaves a temporary folder the next one removes -------------------
KILLED_PREPARE = """
import sys, time
import numpy as np
from corediff import data_cache

def images():
    yield np.zeros((4, 4, 3), np.uint8)
    print("writing", flush=True)
    time.sleep(600)

data_cache.write(sys.argv[1], images(), settings={"channels": 3}, sources="x")
"""


def test_a_killed_data_prepare_leaves_nothing_behind_the_next_one(tmp_path):
    target = tmp_path / ".corediff_cache" / data_cache.settings_key({"channels": 3})
    writer = subprocess.Popen([sys.executable, "-c", KILLED_PREPARE, str(target)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    leftover = target.with_name(f"{target.name}.tmp-{writer.pid}")
    assert leftover.is_dir()
    kept = [target.with_name(f"{target.name}.tmp-{os.getpid()}-x"),  # not corediff's pattern
            target.with_name("notes.tmp-1")]
    for path in kept:
        path.mkdir()
    data_cache.write(target, [np.zeros((4, 4, 3), np.uint8)], settings={"channels": 3},
                     sources="x")
    assert not leftover.exists() and all(path.is_dir() for path in kept)
    assert data_cache.read(target).image(0).shape == (4, 4, 3)
