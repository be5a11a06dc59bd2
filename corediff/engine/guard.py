"""Guarding a run directory before training writes into it.

* :func:`check_location`: the run directory is not a system path and can be written — found
  before training starts, not at the first checkpoint.
* :class:`RunLock`: one writer per run directory, an advisory ``fcntl`` lock on ``<run>/.lock``
  held for the run's life and released by the OS when the process dies; a second ``train``
  fails at once naming the holder's pid.
* :func:`check_run_files`: every name a run writes is missing or what corediff would have
  made there (a file or a directory), never a link or a special file someone planted.
* :func:`claim`: a new run refuses a directory that already holds a run's files unless told
  to overwrite them, and ``--overwrite`` deletes only a corediff run's files (a folder holding
  no run, e.g. a user's ``samples/``, is refused unless empty); :func:`remove_leftovers`
  deletes the temporary files a killed corediff process left behind (its pattern and pid).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from corediff.engine import safe_files
from corediff.engine.checkpoint import find
from corediff.engine.rundir import RunDir
from corediff.errors import TrainingError

#: Trees no run may write into, and directories that may not be a run directory themselves.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin",
                "/sys", "/usr")
NOT_A_RUN_DIR = ("/", "/home", "/root", "/tmp", "/var", "/opt", "/mnt", "/media", "/srv")

#: What a run writes into its directory; their presence marks a directory as a run.
RUN_FILES = ("checkpoints", "recipe.toml", "metrics.csv", "samples", "samples.png", "tb",
             "resume_log.jsonl")
#: Files and directories a run (or ``corediff sample``) writes, relative to the run directory.
FILES = ("recipe.toml", "metrics.csv", "samples.png", "resume_log.jsonl", ".lock")
DIRS = ("checkpoints", "samples", "tb", "generated", "checkpoints/last", "checkpoints/best",
        "checkpoints/.last.old", "checkpoints/.best.old")


def check_location(run: RunDir) -> None:
    """Refuse a system path; create the directory and prove it writable."""
    where = run.root.resolve()
    inside = [tree for tree in SYSTEM_TREES if where == Path(tree) or Path(tree) in where.parents]
    if inside or str(where) in NOT_A_RUN_DIR:
        raise TrainingError(
            f"run directory '{where}' is a system location; choose a directory of your own "
            "with --run-dir or run.root"
        )
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".write-test."):
            pass
    except OSError as exc:
        raise TrainingError(
            f"run directory '{where}' cannot be written: {exc.strerror or exc}"
        ) from None


class RunLock:
    """An exclusive advisory lock on ``<run>/.lock`` (context manager)."""

    def __init__(self, run: RunDir) -> None:
        self.path = run.root / ".lock"
        self.handle: int | None = None

    def __enter__(self) -> RunLock:
        fd = safe_files.open_in_place(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TrainingError(
                f"run directory '{self.path.parent}' is being written by another corediff "
                f"process (pid {holder}); wait for it to finish or use another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.handle = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            os.ftruncate(self.handle, 0)
            os.close(self.handle)  # closing releases the lock
            self.handle = None


def check_run_files(run: RunDir) -> None:
    """Refuse a link or special file at any name a run writes, and in ``samples/``, before
    anything is written (see :mod:`corediff.engine.safe_files`)."""
    for name in FILES:
        safe_files.check(run.root / name)
    for name in DIRS:
        safe_files.check(run.root / name, "dir")
    samples = run.root / "samples"
    if samples.is_dir():
        for path in samples.iterdir():
            safe_files.check(path)


def holds_run(run: RunDir) -> bool:
    """Whether the directory holds a corediff run: a checkpoint, or the recipe and metrics
    every run writes before its first step ends."""
    files = [(run.root / name).is_file() for name in ("recipe.toml", "metrics.csv")]
    return all(files) or any(find(run.checkpoint(name)) for name in ("last", "best"))


def claim(run: RunDir, *, overwrite: bool) -> None:
    """A new run may start here: refuse an existing run's files, or remove them when
    ``overwrite`` (the explicit ``--overwrite``) and the directory holds a corediff run (or
    nothing). Call while holding the :class:`RunLock`."""
    found = [name for name in RUN_FILES if os.path.lexists(run.root / name)]
    if not found:
        return
    if not overwrite:
        raise TrainingError(
            f"run directory '{run.root}' already holds a run ({', '.join(found)}); continue "
            "it with --resume, start over with --overwrite, or choose another --run-dir or "
            "run.name"
        )
    if not holds_run(run):
        raise TrainingError(
            f"--overwrite: '{run.root}' holds {', '.join(found)} but no corediff run (no "
            "checkpoint, recipe.toml and metrics.csv), so nothing is deleted; move them away "
            "or choose another --run-dir"
        )
    for name in found:
        path = run.root / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def remove_leftovers(run: RunDir) -> list[Path]:
    """Delete the temporary files and directories a killed corediff process left beside the
    run's files and checkpoints: only corediff's own pattern, of a pid no longer running,
    and never a link (:data:`corediff.engine.safe_files.TEMP`); returns what was removed."""
    removed = []
    for folder in (run.root, run.root / "checkpoints"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.iterdir():
            match = safe_files.TEMP.match(path.name)
            if match is None or safe_files.pid_alive(int(match.group(1))) or path.is_symlink():
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed
