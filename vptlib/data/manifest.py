"""A prepared folder's ``manifest.csv``: read, validated row by row, and hashed.

The manifest hash is part of every run's identity (a run is reused or resumed only on
the data it was made with).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from vptlib.errors import UserError

from .draw import SPLITS
from .sets import MANIFEST, set_info

MANIFEST_FIELDS = (
    "path",
    "class",
    "split",
    "sha256",
    "width",
    "height",
    "mode",
    "source",
    "note",
    "dhash",
    "phash",
    "duplicate_of",
    "duplicate_kind",
    "excluded",
)


def read_manifest(data: str | Path, include_excluded: bool = False) -> pd.DataFrame:
    """Chosen images of a prepared folder (``split`` in train/val/test), in manifest order.

    The manifest is validated first (:func:`validate_manifest`): a bad one is a
    :class:`UserError` naming its first bad row, never a silent training on it.
    """
    root = Path(data)
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: run `vptlib data prepare --source DIR --out {data}` first")
    redo = f"re-run `vptlib data prepare` for {root}"
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path} is not a manifest written by vptlib ({type(exc).__name__}); {redo}") from None
    validate_manifest(df, root)
    df = df[df["split"].isin(SPLITS)]
    if not include_excluded:
        df = df[df["excluded"] == ""]
    return df.reset_index(drop=True)


def validate_manifest(df: pd.DataFrame, root: Path) -> None:
    """Columns present; every used row's path inside ``root/images``, its class known, its split
    valid; no image twice; no exact copy across splits that prepare did not record."""
    where = root / MANIFEST
    redo = f"re-run `vptlib data prepare` for {root}"
    missing = [c for c in MANIFEST_FIELDS if c not in df.columns]
    if missing:
        raise UserError(f"{where} lacks column(s) {', '.join(missing)}; {redo}")
    used = df[df["split"] != "skipped"]
    if used.empty:
        raise UserError(f"{where} lists no images; {redo}")
    info = set_info(root)
    known = tuple(info["classes"]) if info else None
    real_root = root.resolve()
    same_image: dict[str, dict[str, str]] = {}  # sha256 -> {path: split}
    seen: set[str] = set()
    for i, row in used.iterrows():
        line = f"{where} row {i + 2} ({row['path'] or 'no path'})"  # +2: the header, and 1-based lines
        rel = Path(row["path"])
        if row["split"] not in SPLITS:
            raise UserError(f"{line}: unknown split {row['split']!r}; {redo}")
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] != "images":
            raise UserError(f"{line}: the path must lie inside {root}/images; {redo}")
        if not (root / rel).parent.resolve().is_relative_to(real_root):
            raise UserError(f"{line}: the path leads outside {root}; {redo}")
        if known is not None and row["class"] not in known:
            raise UserError(f"{line}: class {row['class']!r} is not one of the data set's {list(known)}; {redo}")
        if row["path"] in seen:
            raise UserError(f"{line}: the image is listed twice; {redo}")
        seen.add(row["path"])
        if row["excluded"]:
            continue
        copies = same_image.setdefault(row["sha256"], {})
        other = next(((p, s) for p, s in copies.items() if s != row["split"]), None)
        # prepare records every exact copy it kept (duplicate_of); an unrecorded one was added by hand.
        recorded = row["duplicate_kind"] == "exact" and row["duplicate_of"] in copies
        if other is not None and not recorded:
            raise UserError(
                f"{line}: the same image ({row['sha256'][:12]}) is also in the {other[1]} split as {other[0]}; {redo}"
            )
        copies[row["path"]] = row["split"]


def manifest_hash(data: str | Path) -> str:
    return hashlib.sha256((Path(data) / MANIFEST).read_bytes()).hexdigest()[:16]
