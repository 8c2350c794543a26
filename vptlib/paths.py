"""Paths built from what a user or a file says: confined to the folder they belong to.

A class name becomes ``images/<split>/<class>/``, a run id in ``group.json`` becomes a run
folder, a profile name becomes ``runs/<profile>/``. Each such name must be one plain path
component (:func:`component`), and every path joined from one must resolve inside its
base (:func:`inside`, symlinks followed), checked before anything is read or written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

# One component: starts with a letter or digit, then letters, digits, _ . - only. So no
# separator, no "..", no leading dot (hidden), no space, nothing a shell or make splits.
COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_component(name: object) -> bool:
    return isinstance(name, str) and bool(COMPONENT.match(name)) and ".." not in name


def component(name: object, what: str) -> str:
    """``name`` if it is one plain path component, else a :class:`UserError` naming ``what``."""
    if not is_component(name):
        raise UserError(
            f"{what} {name!r} is not a plain name: use letters, digits and _ . - "
            f"(no '/', '..', spaces or leading dot), at most 128 characters"
        )
    return name  # type: ignore[return-value]


def inside(base: str | Path, path: str | Path, what: str) -> Path:
    """``path`` (relative to ``base`` or absolute), refused unless it resolves inside ``base``."""
    base_real = Path(os.path.realpath(base))
    full = Path(base) / path
    real = Path(os.path.realpath(full))
    if real != base_real and base_real not in real.parents:
        raise UserError(f"{what} {str(path)!r} points outside {base}; nothing was read or written")
    return full


def display(path: str | Path) -> str:
    """A path as text that can always be printed and written as UTF-8: bytes of a file name
    that are not valid UTF-8 (an old zip's Latin-1) are shown as ``\\xNN``."""
    text = os.fsdecode(path) if not isinstance(path, str) else path
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(path: str | Path) -> bool:
    """False for a file name holding bytes that are not UTF-8 (decoded as surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
