"""Drawing the study's subset from a source tree: candidate files per class in a seeded
order, the first usable ones taken per split, and duplicates among them marked.

:func:`vptlib.data.prepare.prepare` calls :func:`draw` and writes what it returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vptlib.errors import UserError
from vptlib.paths import display, is_utf8
from vptlib.seeds import SEED_RANGE, is_seed

from .classes import STUDY_CLASSES, ClassMap
from .dedup import DuplicateIndex, Hashes, dhash, find_duplicates, mirrored, phash, sha256_file, thumbnail
from .images import IMAGE_SUFFIXES, BadImage, is_hidden, load_rgb
from .sources import scan_layout

SPLITS = ("train", "val", "test")


@dataclass
class PrepareOptions:
    source: Path
    out: Path
    # Images per class; None (or "all" in a profile or on the command line): every usable
    # image of that split, after duplicates are skipped (the classes then keep their imbalance).
    train_per_class: int | None = 120
    test_per_class: int | None = 80
    val_fraction: float = 0.2
    seed: int = 0
    classes: ClassMap = STUDY_CLASSES
    link: bool = False  # symlink instead of copying the chosen images
    # Free of exact, near and mirrored duplicates by default: a candidate that duplicates an
    # image already chosen (any split, any class) is skipped, with the reason, and the next
    # candidate is drawn, so no validation or test image has such a copy in training. True
    # restores the earlier behaviour: duplicates are kept and only reported.
    keep_duplicates: bool = False
    drop_test_duplicates: bool = False  # with keep_duplicates: exclude test images that duplicate a train/val one

    def __post_init__(self):
        """Every value checked on construction, so a profile's ``prepare:`` is refused before any work."""
        self.train_per_class = per_class(self.train_per_class)
        self.test_per_class = per_class(self.test_per_class)
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
            raise UserError(f"--val-fraction must be a number in [0, 1), got {vf!r}")
        check_seed(self.seed)
        for name in ("link", "keep_duplicates", "drop_test_duplicates"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")


def per_class(value: int | str | None) -> int | None:
    """An image count per class, or None for "all" (``all`` in profiles and on the command line)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"a per-class count must be a whole number or 'all', got {value!r}") from None
    if not 1 <= n <= MAX_PER_CLASS:
        raise UserError(f"--train-per-class and --test-per-class must be in [1, {MAX_PER_CLASS}] or 'all', got {n}")
    return n


MAX_PER_CLASS = 1_000_000


def check_seed(seed: int, flag: str = "--seed") -> None:
    if isinstance(seed, bool) or not is_seed(seed):
        raise UserError(f"{flag} must be an integer in {SEED_RANGE}, got {seed}")


@dataclass
class Row:
    path: str
    cls: str
    split: str
    source: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    note: str = ""
    dhash: int = 0
    phash: int = 0
    duplicate_of: str = ""
    duplicate_kind: str = ""
    excluded: str = ""
    dup_distance: int = 0  # Hamming distance to the image it duplicates (skipped duplicates only)
    thumb: np.ndarray | None = None  # 32x32 grey thumbnail for near-duplicate confirmation
    mirror: Hashes | None = None  # the hashes of the image flipped left to right (mirrored copies)

    def as_dict(self) -> dict[str, str]:
        chosen = self.split != "skipped"
        return {
            "path": self.path,
            "class": self.cls,
            "split": self.split,
            "sha256": self.sha256,
            "width": str(self.width) if chosen else "",
            "height": str(self.height) if chosen else "",
            "mode": self.mode,
            "source": self.source,
            "note": self.note,
            "dhash": f"{self.dhash:016x}" if chosen else "",
            "phash": f"{self.phash:016x}" if chosen else "",
            "duplicate_of": self.duplicate_of,
            "duplicate_kind": self.duplicate_kind,
            "excluded": self.excluded,
        }


def _candidates(folder: Path, source: Path, skipped: list[Row], cls: str) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        rel = display(p.relative_to(source).as_posix())  # always writable as UTF-8
        if not is_utf8(p.name):
            skipped.append(
                Row("", cls, "skipped", rel, note="file name is not valid UTF-8 (an old archive's?): rename it")
            )
        elif p.is_symlink() and not p.exists():
            target = display(os.readlink(p))
            skipped.append(Row("", cls, "skipped", rel, note=f"broken link to {target} (its target was moved?)"))
        elif is_hidden(p):
            skipped.append(Row("", cls, "skipped", rel, note="hidden file"))
        elif p.is_dir():
            skipped.append(Row("", cls, "skipped", rel, note="sub-folder inside a class folder"))
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(Row("", cls, "skipped", rel, note=f"not an image extension ({p.suffix or 'none'})"))
        else:
            files.append(p)
    if not files:
        raise UserError(f"class folder {folder} holds no image files")
    return files


def _take(
    files: list[Path],
    quota: int | None,
    rng: np.random.Generator,
    source: Path,
    cls: str,
    skipped: list[Row],
    where: str,
    seen: DuplicateIndex | None,
) -> list[Row]:
    """The first ``quota`` usable files in a seeded order (every one when ``quota`` is None);
    with ``seen``, none duplicating a chosen image."""
    taken: list[Row] = []
    bad = dups = 0
    for idx in rng.permutation(len(files)):
        if quota is not None and len(taken) == quota:
            break
        path = files[idx]
        rel = path.relative_to(source).as_posix()
        try:
            img, mode, note = load_rgb(path)
        except BadImage as exc:
            bad += 1
            skipped.append(Row("", cls, "skipped", rel, note=str(exc)))
            continue
        row = Row(
            "",
            cls,
            "",
            rel,
            sha256=sha256_file(path),
            width=img.width,
            height=img.height,
            mode=mode,
            note=note,
            dhash=dhash(img),
            phash=phash(img),
            thumb=thumbnail(img),
            mirror=mirrored(img),
        )
        if seen is not None:
            hit = seen.find(row.sha256, row.dhash, row.phash, row.thumb, row.mirror)
            if hit is not None:
                dups += 1
                of, kind, dist = hit
                skipped.append(
                    Row(
                        "",
                        cls,
                        "skipped",
                        rel,
                        sha256=row.sha256,
                        duplicate_of=of,
                        duplicate_kind=kind,
                        dup_distance=dist,
                        note=f"{kind} duplicate (of chosen image {of})",
                    )
                )
                continue
            seen.add(rel, row.sha256, row.dhash, row.phash, row.thumb)
        taken.append(row)
    if quota is not None and len(taken) < quota:
        raise UserError(
            f"class {cls!r} in {where}: only {len(taken)} usable images ({bad} unreadable, {dups} duplicates of "
            f"images already chosen), {quota} requested; lower the per-class count"
        )
    return taken


def draw(opts: PrepareOptions) -> tuple[list[Row], list[Row]]:
    layout = scan_layout(opts.source, opts.classes)
    chosen: list[Row] = []
    skipped: list[Row] = []
    # Training images are drawn first, for every class, then test images: a candidate that
    # duplicates anything already chosen is replaced by the next one in its seeded order.
    seen = None if opts.keep_duplicates else DuplicateIndex()

    def draw(c: int, split: str, quota: int | None, stream: int, where: str) -> list[Row]:
        # One seeded stream per (class, split): changing one split's quota never reshuffles another.
        cls = opts.classes.names[c]
        files = _candidates(layout[split][cls], opts.source, skipped, cls)
        rng = np.random.default_rng([opts.seed, c, stream])
        return _take(files, quota, rng, opts.source, cls, skipped, where, seen)

    classes = range(len(opts.classes.names))
    if "pool" in layout:
        if opts.test_per_class is None:
            raise UserError("a flat folder of classes has no test split of its own: give --test-per-class a number")
        quota = None if opts.train_per_class is None else opts.test_per_class + opts.train_per_class
        both = {c: draw(c, "pool", quota, 2, "the pool") for c in classes}
        tests = {c: both[c][: opts.test_per_class] for c in classes}
        trains = {c: both[c][opts.test_per_class :] for c in classes}
    else:
        trains = {c: draw(c, "train", opts.train_per_class, 0, "Training") for c in classes}
        tests = {c: draw(c, "test", opts.test_per_class, 1, "Testing") for c in classes}
    for c in classes:
        train, test = trains[c], tests[c]
        n_val = round(len(train) * opts.val_fraction)
        val_idx = set(np.random.default_rng([opts.seed, c, 3]).permutation(len(train))[:n_val].tolist())
        for i, row in enumerate(train):
            row.split = "val" if i in val_idx else "train"
        for row in test:
            row.split = "test"
        chosen += train + test
    order = {s: i for i, s in enumerate(SPLITS)}
    chosen.sort(key=lambda r: (order[r.split], opts.classes.names.index(r.cls), r.source))
    for row in chosen:
        row.path = f"images/{row.split}/{row.cls}/{Path(row.source).name}"
    where = {r.source: r for r in chosen}
    for row in skipped:  # name the chosen image a skipped duplicate copies by its place in the data set
        if row.duplicate_of in where:
            row.note = row.note.replace(row.duplicate_of, where[row.duplicate_of].path)
            row.duplicate_of = where[row.duplicate_of].path
    skipped.sort(key=lambda r: r.source)
    return chosen, skipped


def mark_duplicates(chosen: list[Row], drop_test: bool) -> list[tuple[Row, Row, str, int]]:
    pairs = find_duplicates(
        [r.sha256 for r in chosen],
        [r.dhash for r in chosen],
        [r.phash for r in chosen],
        np.stack([r.thumb for r in chosen]),
        mirrors=[r.mirror for r in chosen] if all(r.mirror is not None for r in chosen) else None,
    )
    out = []
    for p in pairs:
        a, b = chosen[p.a], chosen[p.b]  # a precedes b: train < val < test
        out.append((a, b, p.kind, p.distance))
        if not b.duplicate_of or (p.kind == "exact" and b.duplicate_kind != "exact"):
            b.duplicate_of, b.duplicate_kind = a.path, p.kind
        if drop_test and b.split == "test" and a.split in ("train", "val"):
            b.excluded = f"{p.kind} duplicate of {a.split} image {a.path}"
    return out
