"""The flags of ``vptlib run``, kept as data so that ``vptlib run --help`` and a mistyped method
answer without importing torch.

The flags are made from :class:`~vptlib.runs.config.RunConfig`'s fields and the methods' own
options (:func:`vptlib.methods.command_line_options`), which import torch and transformers
(seconds on a small machine). :func:`from_registry` makes them that way; ``run_flags.json``
beside this file holds the result with the sha256 of the sources it was made from
(:data:`SOURCES`). :func:`load` uses the file while those sources are unchanged, and makes the
flags afresh (slowly, but right) once any of them changed. ``python -m vptlib.cli.run_flags``
rewrites the file; ``tests/test_cli_speed.py`` keeps it equal to :func:`from_registry`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1]
FILE = Path(__file__).with_name("run_flags.json")


# Method modules that declare no flag, title or method: the recipe cards (the paper-facing
# record; an edit there must not make every ``vptlib run --help`` import torch until the file
# is rewritten). tests/test_cli_speed.py checks that they import nothing the registry reads.
NOT_FLAGS = ("cards.py", "__main__.py")


def sources() -> list[Path]:
    """What the flags are made from: the method registry and modules, and RunConfig."""
    methods = [p for p in (PACKAGE / "methods").glob("*.py") if p.name not in NOT_FLAGS]
    return sorted([*methods, PACKAGE / "runs" / "config.py", Path(__file__)])


def source_hash() -> str:
    h = hashlib.sha256()
    for path in sources():
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def from_registry() -> dict[str, Any]:
    """The flags as the registry and RunConfig declare them (imports torch)."""
    from vptlib.methods import METHODS, command_line_options
    from vptlib.runs.config import command_line_fields

    clipped = ", ".join(f"{m} {s.defaults.grad_clip:g}" for m, s in METHODS.items() if s.defaults.grad_clip)
    flags = []
    for f, typ in command_line_fields():
        required = f.default is dataclasses.MISSING
        text = f.metadata["help"]
        if f.name == "method":
            text = f"one of: {', '.join(METHODS)}"
        elif f.name == "grad_clip":
            text += f"; the recipes that clip: {clipped}"
        elif not required and f.default is not None:
            text += f" (default {f.default})"
        choices = f.metadata["choices"]
        flags.append(
            {
                "flag": "--" + f.name.replace("_", "-"),
                "dest": f.name,
                "type": "seed" if f.name == "seed" else typ.__name__,
                "default": None if required else f.default,
                "required": required,
                "choices": list(choices) if choices else None,
                "help": text,
                "method_option": False,
            }
        )
    for name, (flag, typ, text) in command_line_options().items():
        flags.append(
            {
                "flag": flag,
                "dest": name,
                "type": typ.__name__,
                "default": None,
                "required": False,
                "choices": None,
                "help": text,
                "method_option": True,
            }
        )
    return {"methods": list(METHODS), "titles": {m: s.title for m, s in METHODS.items()}, "flags": flags}


def load() -> dict[str, Any]:
    """The flags: from ``run_flags.json`` while its sources are unchanged, else from the registry.

    Where the registry is already imported (a notebook, a test that registers a method of its
    own), it is read directly: it costs nothing then, and it is the live one."""
    if "vptlib.methods" in sys.modules:
        return from_registry()
    try:
        stored = json.loads(FILE.read_text())
        if stored.get("sources") == source_hash():
            return stored
    except (OSError, ValueError):
        pass
    return from_registry()


def write() -> Path:
    FILE.write_text(json.dumps({**from_registry(), "sources": source_hash()}, indent=1) + "\n")
    return FILE


if __name__ == "__main__":
    if sys.argv[1:] == ["--make"]:  # the Makefile's list of methods, without importing torch
        print("METHODS := " + " ".join(load()["methods"]))
    else:
        print(f"wrote {write()}", file=sys.stderr)
