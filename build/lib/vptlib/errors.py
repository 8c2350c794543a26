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
