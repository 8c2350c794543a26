"""The book's overrides: what ``make run`` changed of the profile, kept until dropped.

What the book shows is the profile plus these overrides. They live in one file per
records folder, ``<runs>/<profile>/overrides.yaml``, beside the ``group.json`` files they
decide, as ``{method: {setting: value}}``:

- ``make run NB=vision_lora ARGS="-p rank 4"`` sets ``vision_lora``'s overrides to exactly
  ``ARGS`` (an earlier ``make run`` of that method is replaced, not merged);
- every later ``make book`` executes that page with them, so a rebuild (a report-code edit,
  another page's change) keeps them;
- ``make reset NB=vision_lora`` drops them (``make reset`` drops every method's), and the
  next ``make book`` re-executes that page with the profile's settings.

Make sees a change through one stamp per method (:func:`write_stamps`, rewritten only when
that method's overrides changed), so only the page whose overrides changed re-executes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vptlib import atomic, switches
from vptlib.errors import UserError

if TYPE_CHECKING:
    from .profile import Profile

FILE = "overrides.yaml"
HEADER = (
    "# The book's overrides of its profile, per method: written by `make run`, dropped by\n"
    "# `make reset NB=<method>` (vptlib.study.overrides). Edit with those commands.\n"
)


def path(runs: str | Path, profile_name: str) -> Path:
    """``<runs>/<profile>/overrides.yaml``: the one place a build's overrides are kept."""
    return Path(runs) / profile_name / FILE


def load(file: str | Path) -> dict[str, dict[str, Any]]:
    """Every method's overrides (``{}`` when there is no file); a damaged file is one line."""
    file = Path(file)
    if not file.is_file():
        return {}
    try:
        found = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(
            f"{file} is not valid YAML ({str(exc).splitlines()[0]}); fix it or drop it: make reset"
        ) from None
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise UserError(
            f"{file} must map each method to its settings ({{method: {{name: value}}}}); drop it: make reset"
        )
    return {str(m): dict(v) for m, v in found.items() if v}


def _write(file: Path, found: dict[str, dict[str, Any]]) -> None:
    if not found:
        file.unlink(missing_ok=True)
        return
    atomic.write_text(file, HEADER + yaml.safe_dump(found, sort_keys=True, default_flow_style=False))


def set_method(file: str | Path, method: str, options: dict[str, Any]) -> None:
    """Make ``options`` the overrides of ``method`` (none: drop them)."""
    file = Path(file)
    found = load(file)
    if options:
        found[method] = dict(options)
    else:
        found.pop(method, None)
    _write(file, found)


def drop(file: str | Path, method: str | None = None) -> list[str]:
    """Drop ``method``'s overrides, or every method's when ``method`` is None; the methods dropped."""
    file = Path(file)
    found = load(file)
    gone = sorted(found) if method is None else [method] if method in found else []
    _write(file, {m: v for m, v in found.items() if m not in gone})
    return gone


def stamp(folder: str | Path, method: str) -> Path:
    return Path(folder) / f"{method}.json"


def write_stamps(file: str | Path, folder: str | Path, methods: list[str]) -> list[str]:
    """One stamp per method in ``folder``, rewritten only when its overrides changed (its time
    then moves and make re-executes that page alone); the methods whose stamp changed."""
    from .book import write_if_changed

    found = load(file)
    changed = []
    for method in methods:
        text = json.dumps(found.get(method, {}), sort_keys=True) + "\n"
        if write_if_changed(stamp(folder, method), text):
            changed.append(method)
    return changed


def book_options(profile_path: str | Path, method: str) -> dict[str, Any]:
    """The experiment page's ``options`` parameter as the book executes it: ``method``'s overrides."""
    from .profile import load as load_profile

    prof = load_profile(profile_path, check_methods=False)
    found = load(path(prof.runs, prof.profile)).get(method)
    return {"options": found} if found else {}


def note(method: str, options: dict[str, Any], prof: Profile) -> str:
    """The experiment page's line on its overrides (Markdown; empty when it has none)."""
    if not options:
        return ""
    shown = ", ".join(f"`{k} = {v}`" for k, v in options.items())
    if not switches.flag(switches.BOOK):
        from vptlib.runs.records import GROUP_OUTSIDE  # imports torch: this module stays without

        return (
            f"**Overrides of the profile:** {shown}, given to this notebook outside the book's build. "
            f"Its runs are named in `{GROUP_OUTSIDE}`, and the book's pages are unchanged; "
            f"`make run NB={method}` with the same settings puts them in the book."
        )
    file = path(prof.runs, prof.profile).as_posix()
    return (
        f"**Overrides of the profile:** {shown}, set by `make run` and kept in `{file}`. "
        f"Every other setting is the profile's. `make reset NB={method}` drops them."
    )
