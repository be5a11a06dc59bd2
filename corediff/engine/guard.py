"""Guarding a run directory before training writes into it.

* :func:`check_location`: the run directory is not a system path and can be written — found
  before training starts, not at the first checkpoint.
* :class:`RunLock`: one writer per run directory, an advisory ``fcntl`` lock on ``<run>/.lock``
  held for the run's life and released by the OS when the process dies; a second ``train``
  fails at once naming the holder's pid.
* :func:`claim`: a new run refuses a directory that already holds a run's files unless told
  to overwrite them; :func:`remove_leftovers` deletes temporary files a crash left behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from corediff.engine.rundir import RunDir
from corediff.errors import TrainingError

#: Trees no run may write into, and directories that may not be a run directory themselves.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin",
                "/sys", "/usr")
NOT_A_RUN_DIR = ("/", "/home", "/root", "/tmp", "/var", "/opt", "/mnt", "/media", "/srv")

#: What a run writes into its directory; their presence marks a directory as a run.
RUN_FILES = ("checkpoints", "recipe.toml", "metrics.csv", "samples", "samples.png", "tb",
             "resume_log.jsonl")


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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
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


def claim(run: RunDir, *, overwrite: bool) -> None:
    """A new run may start here: refuse an existing run's files, or remove them when
    ``overwrite`` (the explicit ``--overwrite``). Call while holding the :class:`RunLock`."""
    found = [name for name in RUN_FILES if (run.root / name).exists()]
    if not found:
        return
    if not overwrite:
        raise TrainingError(
            f"run directory '{run.root}' already holds a run ({', '.join(found)}); continue "
            "it with --resume, start over with --overwrite, or choose another --run-dir or "
            "run.name"
        )
    for name in found:
        path = run.root / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def remove_leftovers(run: RunDir) -> list[Path]:
    """Delete the temporary files and directories an interrupted write left (``.*.tmp``
    beside the run's files and checkpoints); returns what was removed."""
    removed = []
    for folder in (run.root, run.root / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed
