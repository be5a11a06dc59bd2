"""The corediff error family: the CLI prints one block for each and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CorediffError(Exception):
    """Base of every error corediff reports to a user."""


class ConfigError(CorediffError):
    """A recipe, override or argument is invalid."""


class PluginError(CorediffError):
    """A plugin is unknown, clashes with another, or fails to load."""


class TrainingError(CorediffError):
    """Training cannot go on (a NaN loss, a bad checkpoint)."""


class Interrupted(CorediffError):
    """Training stopped on a signal after saving ``last``; the process exits with
    128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
