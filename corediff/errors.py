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


class ArgumentError(ConfigError, ValueError):
    """A Python function was given an argument of the right type but a value it does not
    allow (also a ``ValueError``); the message names the argument and what is allowed."""


class ArgumentTypeError(ConfigError, TypeError):
    """A Python function was given an argument of the wrong type, or an unknown keyword (also
    a ``TypeError``); the message names the argument and what is allowed."""


def check_integer(name: str, value: object, low: int, high: int) -> int:
    """``value`` when it is an int in low..high; else an :class:`ArgumentTypeError` or
    :class:`ArgumentError` naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an integer in {low}..{high}, not "
                                f"{type(value).__name__} {_shown(value)}")
    if not low <= value <= high:
        raise ArgumentError(f"{name} = {_shown(value)} is outside {low}..{high}")
    return value


def _shown(value: object) -> str:
    """A value as a short text (a huge integer by its number of digits)."""
    if isinstance(value, int) and abs(value) >= 10**18:
        return f"(an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
