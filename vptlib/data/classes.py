"""The four study classes and the mapping from the folder names found in the wild.

The canonical order (glioma, meningioma, notumor, pituitary) is used everywhere:
logits, tables and confusion matrices. Kaggle's dataset names its folders
``glioma``/``meningioma``/``notumor``/``pituitary``; the older SARTAJ set uses
``glioma_tumor``/``meningioma_tumor``/``no_tumor``/``pituitary_tumor``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vptlib.errors import UserError
from vptlib.paths import component

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")

# Human-readable names for tables, figures and the zero-shot prompts.
DISPLAY_NAMES: dict[str, str] = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "notumor": "no tumor",
    "pituitary": "pituitary",
}

_STUDY_ALIASES: dict[str, tuple[str, ...]] = {
    "glioma": ("glioma", "gliomatumor", "gliomatumour"),
    "meningioma": ("meningioma", "meningiomatumor", "meningiomatumour"),
    "notumor": ("notumor", "notumour", "notumors", "normal"),
    "pituitary": ("pituitary", "pituitarytumor", "pituitarytumour", "pituitaryadenoma"),
}


def folder_key(name: str) -> str:
    """Lower-case letters and digits only: ``No_Tumor`` and ``notumor`` share a key."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class ClassMap:
    """Canonical class names and the folder-name keys that map onto each."""

    names: tuple[str, ...]
    aliases: dict[str, tuple[str, ...]]

    def canonical(self, folder: str) -> str | None:
        key = folder_key(folder)
        for name in self.names:
            if key == folder_key(name) or key in self.aliases.get(name, ()):
                return name
        return None

    def resolve(self, folder: str, where: str) -> str:
        """The canonical class of ``folder``; an error naming it when none matches."""
        name = self.canonical(folder)
        if name is None:
            raise UserError(
                f"folder {where!r} matches no class; expected one of "
                f"{', '.join(self.names)} (or pass --classes to name your own)"
            )
        return name


STUDY_CLASSES = ClassMap(CLASSES, _STUDY_ALIASES)


def parse_classes(spec: str | None) -> ClassMap:
    """Parse ``--classes``: ``name[=alias|alias],...``; ``None`` gives the study's four.

    Example: ``--classes "benign=b|noncancer,malignant=m"``.
    """
    if not spec:
        return STUDY_CLASSES
    names: list[str] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, alias_text = part.partition("=")
        name = name.strip()
        if not folder_key(name):
            raise UserError(f"--classes: empty class name in {spec!r}")
        component(name, "--classes: class name")  # it names a folder under images/<split>/
        if name in names:
            raise UserError(f"--classes: class {name!r} given twice")
        names.append(name)
        aliases[name] = tuple(folder_key(a) for a in alias_text.split("|") if a.strip())
    if len(names) < 2:
        raise UserError(f"--classes needs at least two classes, got {spec!r}")
    return ClassMap(tuple(names), aliases)
