"""Paths a user names, checked before any work: an output folder or file that cannot be
written is refused in one sentence before anything is computed, and a path holding a NUL
character (which no operating system accepts) is refused instead of failing deep inside.
(No imports beyond the standard library: the CLI calls these at start-up.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from corediff.errors import ConfigError


def check_text(flag: str, value: str) -> None:
    """Refuse a command-line value holding a NUL character."""
    if "\0" in value:
        raise ConfigError(f"{flag} {value!r} contains a NUL character (U+0000), which no path "
                          "or name may hold")


def check_folder(flag: str, path: str | Path) -> None:
    """Refuse a folder that cannot be made or written: something that is not a folder in
    its place or on its way, or a read-only place."""
    path = Path(path).expanduser()
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise ConfigError(f"{flag} '{path}' is not a folder")
        raise ConfigError(f"{flag} '{path}' cannot be made: '{existing}' is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} '{path}': '{existing}' is read-only; give a folder that "
                          "can be written")


def check_file(flag: str, path: str | Path) -> None:
    """Refuse an output file that cannot be written: a folder or other non-file in its
    place, a read-only file, or a folder that cannot be made or written."""
    path = Path(path).expanduser()
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        check_folder(f"{flag} '{path}': its folder", path.parent)
        return
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{flag} '{path}' is a folder; give a file name")
    if not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
        raise ConfigError(f"{flag} '{path}' is not a regular file; give a file name")
    if not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} '{path}' is read-only; it is left as it is")
    check_folder(f"{flag} '{path}': its folder", path.parent)


def check_writable(folder: Path, names: tuple[str, ...]) -> None:
    """Refuse, before anything is written, a folder whose files ``names`` (those that exist)
    or itself cannot be written: a half-updated run would otherwise be left behind."""
    for path in (folder, *(folder / name for name in names)):
        if os.path.lexists(path) and not os.access(path, os.W_OK):
            raise ConfigError(f"'{path}' is read-only; make it writable to go on (nothing "
                              "was changed)")
