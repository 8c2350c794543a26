"""Errors a user can act on.

A :class:`UserError` is printed as one line by the CLI and exits with code 2, never
as a traceback: it means "your input or environment is wrong, here is how to fix it".
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a missing resource. The message says what to do next."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the message names the epoch and step."""

    exit_code = 3


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean X?)`` for the known name closest to a mistyped one, or nothing."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
