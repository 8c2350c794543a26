"""``vptlib data prepare``: turn a class-folder tree into the study's stratified subset.

Input layouts:

* split-level (Kaggle, SARTAJ): ``Training/<class>/`` and ``Testing/<class>/``;
* flat: ``<class>/`` only; the test split is then drawn from the same pool.

Sampling is deterministic for a seed and stratified: every class contributes
``train_per_class`` training and ``test_per_class`` test images, and a validation
split (``val_fraction`` of each class's training images) is carved from training.
Files are inspected in a seeded random order and the first usable ones are taken, so
an unreadable file is reported and replaced by the next one in that order.

Output in ``out/``: ``images/<split>/<class>/`` copies (or symlinks), ``manifest.csv``
(one row per chosen image, plus one ``split=skipped`` row per unusable file with the
reason) and ``duplicates.csv`` (every exact or near-duplicate pair among the chosen).

Those three are one *set*, swapped in as a unit. A set lives in ``out/.sets/<id>/``
with a marker file (:data:`SET_MARKER`) naming the tool, the classes and the
manifest's sha256; ``out/current`` is a symlink to the live set, and ``out/images``,
``out/manifest.csv`` and ``out/duplicates.csv`` are fixed symlinks through
``current``. A new set is written beside the old one and committed by one atomic
rename of ``current``, so a kill at any instant leaves either the old complete set or
the new one. ``prepare`` deletes or replaces only what it can prove it wrote (sets
with its marker); anything else in ``out/`` under those names stops it, before any
change. It never writes inside ``--source`` nor reads a source file that lies inside
``--out`` (also through symlinks), and one ``--out`` is prepared by one process at a
time (:mod:`vptlib.locks`).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import locks
from .classes import STUDY_CLASSES, ClassMap
from .dedup import DuplicateIndex, dhash, find_duplicates, phash, sha256_file, thumbnail
from .errors import UserError
from .images import IMAGE_SUFFIXES, BadImage, is_hidden, load_rgb
from .layout import scan_layout
from .sets import (
    MANIFEST,
    check_apart,
    check_ownership,
    commit,
    write_set,
)

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "path", "class", "split", "sha256", "width", "height", "mode", "source",
    "note", "dhash", "phash", "duplicate_of", "duplicate_kind", "excluded",
)  # fmt: skip


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
    # Duplicate-free by default: a candidate that is an exact or near duplicate of an image
    # already chosen (any split, any class) is skipped, with the reason, and the next
    # candidate is drawn, so no validation or test image has a copy in training. True
    # restores the earlier behaviour: duplicates are kept and only reported.
    keep_duplicates: bool = False
    drop_test_duplicates: bool = False  # with keep_duplicates: exclude test images that duplicate a train/val one

    def __post_init__(self):
        self.train_per_class = per_class(self.train_per_class)
        self.test_per_class = per_class(self.test_per_class)


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


@dataclass
class _Row:
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

    def as_dict(self) -> dict[str, str]:
        chosen = self.split != "skipped"
        return {
            "path": self.path, "class": self.cls, "split": self.split, "sha256": self.sha256,
            "width": str(self.width) if chosen else "", "height": str(self.height) if chosen else "",
            "mode": self.mode, "source": self.source, "note": self.note,
            "dhash": f"{self.dhash:016x}" if chosen else "", "phash": f"{self.phash:016x}" if chosen else "",
            "duplicate_of": self.duplicate_of, "duplicate_kind": self.duplicate_kind,
            "excluded": self.excluded,
        }  # fmt: skip


def _candidates(folder: Path, source: Path, skipped: list[_Row], cls: str) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        rel = p.relative_to(source).as_posix()
        if is_hidden(p):
            skipped.append(_Row("", cls, "skipped", rel, note="hidden file"))
        elif p.is_dir():
            skipped.append(_Row("", cls, "skipped", rel, note="sub-folder inside a class folder"))
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(_Row("", cls, "skipped", rel, note=f"not an image extension ({p.suffix or 'none'})"))
        else:
            files.append(p)
    if not files:
        raise UserError(f"class folder {folder} holds no image files")
    return files


def _take(files: list[Path], quota: int | None, rng: np.random.Generator, source: Path, cls: str,
          skipped: list[_Row], where: str, seen: DuplicateIndex | None) -> list[_Row]:  # fmt: skip
    """The first ``quota`` usable files in a seeded order (every one when ``quota`` is None);
    with ``seen``, none duplicating a chosen image."""
    taken: list[_Row] = []
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
            skipped.append(_Row("", cls, "skipped", rel, note=str(exc)))
            continue
        row = _Row("", cls, "", rel, sha256=sha256_file(path), width=img.width, height=img.height,
                   mode=mode, note=note, dhash=dhash(img), phash=phash(img), thumb=thumbnail(img))  # fmt: skip
        if seen is not None:
            hit = seen.find(row.sha256, row.dhash, row.phash, row.thumb)
            if hit is not None:
                dups += 1
                of, kind, dist = hit
                skipped.append(_Row("", cls, "skipped", rel, sha256=row.sha256, duplicate_of=of, duplicate_kind=kind,
                                    dup_distance=dist, note=f"{kind} duplicate (of chosen image {of})"))  # fmt: skip
                continue
            seen.add(rel, row.sha256, row.dhash, row.phash, row.thumb)
        taken.append(row)
    if quota is not None and len(taken) < quota:
        raise UserError(
            f"class {cls!r} in {where}: only {len(taken)} usable images ({bad} unreadable, {dups} duplicates of "
            f"images already chosen), {quota} requested; lower the per-class count"
        )
    return taken


def _rows(opts: PrepareOptions) -> tuple[list[_Row], list[_Row]]:
    layout = scan_layout(opts.source, opts.classes)
    chosen: list[_Row] = []
    skipped: list[_Row] = []
    # Training images are drawn first, for every class, then test images: a candidate that
    # duplicates anything already chosen is replaced by the next one in its seeded order.
    seen = None if opts.keep_duplicates else DuplicateIndex()

    def draw(c: int, split: str, quota: int | None, stream: int, where: str) -> list[_Row]:
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


def _mark_duplicates(chosen: list[_Row], drop_test: bool) -> list[tuple[_Row, _Row, str, int]]:
    pairs = find_duplicates(
        [r.sha256 for r in chosen],
        [r.dhash for r in chosen],
        [r.phash for r in chosen],
        np.stack([r.thumb for r in chosen]),
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


def _csv(rows: list[dict[str, str]], fields: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


@dataclass
class PrepareResult:
    manifest: Path
    chosen: int
    skipped: int
    duplicate_pairs: int
    cross_split_pairs: int
    excluded: int
    table: str


MAX_PER_CLASS = 1_000_000
MAX_SEED = 2**63 - 1


def check_seed(seed: int, flag: str = "--seed") -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"{flag} must be an integer in [0, 2**63 - 1], got {seed}")


def prepare(opts: PrepareOptions) -> PrepareResult:
    """Sample, copy, hash and report; returns a summary with a printable table.

    Every check runs before anything in ``--out`` is changed.
    """
    if not 0 <= opts.val_fraction < 1:
        raise UserError("--val-fraction must be in [0, 1)")
    check_seed(opts.seed)
    opts.source = Path(opts.source).resolve()
    opts.out = Path(opts.out).resolve()
    check_apart(opts.source, opts.out)
    if opts.out.exists() and not opts.out.is_dir():
        raise UserError(f"--out {opts.out} exists and is not a folder")
    if opts.out.is_dir():
        check_ownership(opts.out)  # early, before minutes of hashing; again under the lock
    chosen, skipped = _rows(opts)
    inside = next((r.source for r in chosen if (opts.source / r.source).resolve().is_relative_to(opts.out)), None)
    if inside:
        raise UserError(f"--source file {inside} is a link into --out {opts.out}; prepare would replace its own input")
    pairs = _mark_duplicates(chosen, opts.drop_test_duplicates)
    manifest = _csv([r.as_dict() for r in chosen + skipped], MANIFEST_FIELDS)
    dup_rows = [
        {"a": a.path, "b": b.path, "a_split": a.split, "b_split": b.split, "kind": k, "distance": str(d)}
        for a, b, k, d in pairs
    ]  # fmt: skip
    split_of = {r.path: r.split for r in chosen}
    dup_rows += [{"a": r.duplicate_of, "b": r.source, "a_split": split_of.get(r.duplicate_of, ""), "b_split": "skipped",
                  "kind": r.duplicate_kind, "distance": str(r.dup_distance)}
                 for r in skipped if r.duplicate_kind]  # fmt: skip
    duplicates = _csv(dup_rows, ("a", "b", "a_split", "b_split", "kind", "distance"))
    opts.out.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(opts.out, f"--out {opts.out}"):
        check_ownership(opts.out)
        files = [(row.path, (opts.source / row.source).resolve()) for row in chosen]
        commit(opts.out, write_set(opts.out, files, opts.classes.names, opts.source, opts.link, manifest, duplicates))
    cross = sum(a.split != b.split for a, b, _, _ in pairs)
    excluded = sum(bool(r.excluded) for r in chosen)
    return PrepareResult(opts.out / MANIFEST, len(chosen), len(skipped), len(pairs), cross, excluded,
                         summary_table(chosen, skipped, pairs, opts.classes.names))  # fmt: skip


def summary_table(chosen: list[_Row], skipped: list[_Row], pairs, names: tuple[str, ...]) -> str:
    counts = Counter((r.cls, r.split) for r in chosen if not r.excluded)
    lines = [f"{'class':<14}" + "".join(f"{s:>8}" for s in SPLITS) + f"{'skipped':>9}"]
    skip_counts = Counter(r.cls for r in skipped)
    for name in names:
        lines.append(f"{name:<14}" + "".join(f"{counts[name, s]:>8}" for s in SPLITS) + f"{skip_counts[name]:>9}")
    lines.append(
        f"{'total':<14}" + "".join(f"{sum(counts[n, s] for n in names):>8}" for s in SPLITS) + f"{len(skipped):>9}"
    )
    kinds = Counter((k, "cross-split" if a.split != b.split else "within-split") for a, b, k, _ in pairs)
    if pairs:
        lines.append("duplicates: " + ", ".join(f"{n} {k} {w}" for (k, w), n in sorted(kinds.items())))
    else:
        lines.append("duplicates: none found")
    reasons = Counter(r.note.split(" (")[0] for r in skipped)
    for reason, n in sorted(reasons.items()):
        lines.append(f"skipped {n}: {reason}")
    return "\n".join(lines)
