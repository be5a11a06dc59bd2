"""Writing inside a run directory without following what someone else put there.

A run directory may sit in a shared folder (``/shared/runs``), where anyone can plant a
symbolic link, a FIFO or a hard link at a name corediff writes. Every write goes through
this module, so nothing outside the run directory is ever written, truncated or deleted:

* a file is replaced by renaming a fresh temporary file over it (the rename replaces a
  link, never what it points to), or appended to / locked in place through ``O_NOFOLLOW``
  with its type and link count checked on the open descriptor;
* a name that is a symbolic link, a FIFO, a socket, a device, or a directory where a file
  belongs (or the reverse), is refused in one sentence naming it, before anything is opened
  (opening a FIFO would block, opening a device may act on it);
* temporary names carry corediff's pattern and the writer's pid
  (``.<name>.corediff-<pid>-<random>.tmp``), so cleanup removes only its own leftovers.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TextIO

from corediff.errors import TrainingError

#: The temporary files and folders corediff writes (group 1: the writer's pid).
TEMP = re.compile(r"^\..+\.corediff-(\d+)-\w+\.tmp$")
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISREG, "a regular file"))
_NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def temp_prefix(name: str) -> str:
    """The prefix of a temporary sibling of ``name`` (``mkstemp``/``mkdtemp`` add the rest)."""
    return f".{name}.corediff-{os.getpid()}-"


def kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _refusal(path: Path, found: str, expected: str) -> TrainingError:
    return TrainingError(
        f"'{path}' is {found}, not {expected} corediff wrote; it writes nothing through a "
        "name it did not create: move it away and run again")


def check(path: str | Path, expected: str = "file") -> None:
    """Refuse ``path`` unless it is missing or (not following links) a regular file
    (``expected="file"``) or a directory (``"dir"``)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    wanted = stat.S_ISDIR if expected == "dir" else stat.S_ISREG
    if not wanted(mode):
        raise _refusal(path, kind(mode), "a directory" if expected == "dir" else "a file")


def ensure_dir(path: str | Path) -> Path:
    """Create the directory ``path`` (and its parents) unless it exists; refuse a link or
    anything else in its place."""
    path = Path(path)
    check(path, "dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_in_place(path: str | Path, flags: int) -> int:
    """A descriptor of the regular file ``path`` (created when missing), opened without
    following a link and checked on the descriptor: a regular file with no other name (a hard
    link would let a write reach a file elsewhere)."""
    path = Path(path)
    check(path)
    try:
        fd = os.open(path, flags | os.O_CREAT | _NO_FOLLOW, 0o666)
    except OSError as exc:
        raise TrainingError(f"'{path}' cannot be opened for writing: "
                            f"{exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        found = kind(info.st_mode) if not stat.S_ISREG(info.st_mode) else "a hard link"
        raise _refusal(path, found, "a file")
    return fd


def open_append(path: str | Path) -> TextIO:
    """``path`` opened for appending UTF-8 text (see :func:`open_in_place`)."""
    fd = open_in_place(path, os.O_WRONLY | os.O_APPEND)
    return os.fdopen(fd, "a", encoding="utf-8", newline="")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
