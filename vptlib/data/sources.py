"""Where a source folder keeps its classes: ``Training/`` + ``Testing/`` (the Kaggle and
SARTAJ layouts, class folders under each) or a flat pool of class folders. Folder names
are matched to the study's classes through :class:`~vptlib.data.classes.ClassMap` aliases."""

from __future__ import annotations

from pathlib import Path

from vptlib.errors import UserError

from .classes import ClassMap, folder_key
from .images import is_hidden

_SPLIT_DIRS = {"training": "train", "train": "train", "testing": "test", "test": "test"}


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p))


def _class_folders(root: Path, classes: ClassMap, source: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _subdirs(root):
        name = classes.resolve(d.name, str(d.relative_to(source)))
        if name in found:
            raise UserError(f"folders {found[name].name!r} and {d.name!r} both map to class {name!r}")
        found[name] = d
    missing = [c for c in classes.names if c not in found]
    if missing:
        raise UserError(f"{root} has no folder for class(es) {', '.join(missing)}")
    return found


def scan_layout(source: Path, classes: ClassMap) -> dict[str, dict[str, Path]]:
    """``{"train"|"test"|"pool": {class: folder}}`` for the two accepted layouts."""
    if not source.is_dir():
        raise UserError(f"source folder {source} does not exist (download the dataset first: vptlib data fetch)")
    subdirs = _subdirs(source)
    if not subdirs:
        raise UserError(f"source folder {source} has no sub-folders; expected Training/ and Testing/ or class folders")
    split_dirs = {_SPLIT_DIRS[folder_key(d.name)]: d for d in subdirs if folder_key(d.name) in _SPLIT_DIRS}
    if split_dirs:
        if set(split_dirs) != {"train", "test"}:
            raise UserError(
                f"{source} has {sorted(d.name for d in split_dirs.values())} but needs both Training/ and Testing/"
            )
        extra = [d.name for d in subdirs if folder_key(d.name) not in _SPLIT_DIRS]
        if extra:
            raise UserError(f"folder {extra[0]!r} in {source} is neither a split (Training/Testing) nor expected here")
        return {split: _class_folders(d, classes, source) for split, d in split_dirs.items()}
    return {"pool": _class_folders(source, classes, source)}
