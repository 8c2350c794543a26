"""Drawing the study's subset from a source tree: every usable file read once, copies found
(:mod:`.copies`) and grouped into copy clusters, and the splits drawn by cluster, so that a
copy of a training or validation image never reaches test.

Two ways to draw, by the profile's counts:

Every split holds one image per copy cluster (the cluster's other images are skipped, each
named as a copy of the one kept), so no image is a copy of another, within or across splits.

* **per class** (``test_per_class`` a number): the test split comes from the source's own
  test folder (``Testing/``), training from ``Training/`` (a flat pool serves both). Each
  class's clusters are visited in a seeded order; training takes one image of each cluster
  that has one in its folder until it has ``train_per_class`` (``all``: every such cluster),
  then test does the same among the clusters left. Validation is ``val_fraction`` of the
  training clusters.
* **pooled** (``test_per_class`` is ``all``): the whole data set is one pool, split by
  cluster and class. Each class's clusters are shuffled; ``test_fraction`` of them go to
  test, ``val_fraction`` of the rest to validation and the others to training.
  No class is left with less than :data:`MIN_TEST_SHARE` of the test split (the largest
  classes give up clusters to training until none is).

A cluster filed under two classes is skipped whole (its label is unknown). ``keep_duplicates``:
files drawn in a seeded order per folder, copies kept and only reported (the earlier draw).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vptlib.errors import UserError
from vptlib.paths import display, is_utf8

from .copies import CopyPair, Signature, clusters, dhash, find_copies, phash, sha256_file
from .images import IMAGE_SUFFIXES, BadImage, is_hidden, load_rgb
from .options import MAX_PER_CLASS, PrepareOptions, Row, check_seed, per_class  # noqa: F401  (draw's API)
from .sources import scan_layout

SPLITS = ("train", "val", "test")
# Pooled draws leave no class with less than this share of the test split: half a balanced
# share (12.5% for four classes is 1 / (2 x 4)).
MIN_TEST_SHARE_OF_BALANCED = 0.5


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


def read_rows(path: Path, source: Path, cls: str, folder: str) -> Row:
    """One usable file as a row with its hashes and copy signature; raises :class:`BadImage`."""
    img, mode, note = load_rgb(path)
    return Row(
        "",
        cls,
        "",
        path.relative_to(source).as_posix(),
        sha256=sha256_file(path),
        width=img.width,
        height=img.height,
        mode=mode,
        note=note,
        dhash=dhash(img),
        phash=phash(img),
        folder=folder,
        signature=Signature.of(img),
    )


def read_source(opts: PrepareOptions, progress: bool = False) -> tuple[list[Row], list[Row]]:
    """Every usable image of the source (in folder, class and file order) and the skipped files."""
    from tqdm import tqdm

    layout = scan_layout(opts.source, opts.classes)
    rows: list[Row] = []
    skipped: list[Row] = []
    work = [(folder, cls, p) for folder in layout for cls in opts.classes.names
            for p in _candidates(layout[folder][cls], opts.source, skipped, cls)]  # fmt: skip
    for folder, cls, p in tqdm(work, desc="read and hash", disable=not progress, mininterval=2):
        try:
            rows.append(read_rows(p, opts.source, cls, folder))
        except BadImage as exc:
            skipped.append(Row("", cls, "skipped", p.relative_to(opts.source).as_posix(), note=str(exc)))
    return rows, skipped


@dataclass
class Drawn:
    """What :func:`draw` returns: the chosen and skipped rows and the copy pairs among all usable images."""

    chosen: list[Row]
    skipped: list[Row]
    pairs: list[tuple[Row, Row, CopyPair]]  # every copy pair of the source (either side chosen or not)


def draw(opts: PrepareOptions, rows: list[Row], skipped: list[Row]) -> Drawn:
    """The splits drawn from ``rows`` (:func:`read_source`); copies skipped are added to ``skipped``."""
    pairs = find_copies([r.sha256 for r in rows], [r.signature for r in rows])
    by = _draw_files if opts.keep_duplicates else _draw_clusters
    chosen = by(opts, rows, pairs, skipped)
    _name(chosen, opts)
    where = {r.source: r.path for r in chosen}
    for row in skipped:  # name the chosen image a skipped copy copies by its place in the set
        if row.duplicate_of in where:
            row.note = row.note.replace(row.duplicate_of, where[row.duplicate_of])
            row.duplicate_of = where[row.duplicate_of]
    skipped.sort(key=lambda r: r.source)
    return Drawn(chosen, skipped, [(rows[p.a], rows[p.b], p) for p in pairs])


def _name(chosen: list[Row], opts: PrepareOptions) -> None:
    """Order the chosen rows (split, class, source) and give each its place in the set; two
    files of one name (from two source folders) get a numbered second name."""
    order = {s: i for i, s in enumerate(SPLITS)}
    chosen.sort(key=lambda r: (order[r.split], opts.classes.names.index(r.cls), r.source))
    used: set[str] = set()
    for row in chosen:
        name = Path(row.source)
        path, k = f"images/{row.split}/{row.cls}/{name.name}", 1
        while path in used:
            k += 1
            path = f"images/{row.split}/{row.cls}/{name.stem}-{k}{name.suffix}"
        used.add(path)
        row.path = path


def _shortfall(cls: str, where: str, got: int, quota: int) -> UserError:
    return UserError(
        f"class {cls!r} in {where}: only {got} images that are not copies of one another or of an image "
        f"already chosen, {quota} requested; lower the per-class count"
    )


def pooled_test_counts(clusters_per_class: dict[str, int], fraction: float) -> dict[str, int]:
    """Test clusters per class in a pooled draw: ``fraction`` of each class's clusters, then the
    largest classes give clusters back to training until every class holds at least
    :data:`MIN_TEST_SHARE_OF_BALANCED` of a balanced share of the test split."""
    n = {c: round(fraction * k) for c, k in clusters_per_class.items()}
    floor = MIN_TEST_SHARE_OF_BALANCED / max(1, len(n))
    while sum(n.values()) and min(n.values()) < floor * sum(n.values()):
        n[max(n, key=lambda c: (n[c], c))] -= 1
    return n


def _draw_clusters(opts: PrepareOptions, rows: list[Row], pairs: list[CopyPair], skipped: list[Row]) -> list[Row]:
    label = clusters(len(rows), pairs)
    members: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(label):
        members[int(c)].append(i)
    direct = {(p.a, p.b): p for p in pairs}
    by_class: dict[str, list[int]] = {c: [] for c in opts.classes.names}
    for k, idx in sorted(members.items()):
        if len({rows[i].cls for i in idx}) > 1:
            for i in idx:
                others = ", ".join(rows[j].source for j in idx if rows[j].cls != rows[i].cls)
                skipped.append(_skipped(rows[i], f"its copies are filed under another class ({others}): label unknown"))
            continue
        by_class[rows[idx[0]].cls].append(k)
    pooled_tests = (
        pooled_test_counts({c: len(v) for c, v in by_class.items()}, opts.test_fraction) if opts.pooled else {}
    )
    # Per-class draws take training images from the training folder and test images from the
    # test folder (a flat pool serves both); a pooled draw takes any image for any split.
    train_from = None if opts.pooled else ("train", "pool")
    test_from = None if opts.pooled else ("test", "pool")
    chosen: list[Row] = []
    for c, cls in enumerate(opts.classes.names):
        rng = np.random.default_rng([opts.seed, c, 0])
        visit = [by_class[cls][i] for i in rng.permutation(len(by_class[cls]))]
        if opts.pooled:
            n_test = pooled_tests[cls]
            test, train = visit[:n_test], visit[n_test:]
            if opts.train_per_class is not None:
                train = train[: opts.train_per_class]
        else:
            quota = opts.train_per_class
            train = [k for k in visit if _has(rows, members[k], train_from)][:quota]
            if quota is not None and len(train) < quota:
                raise _shortfall(cls, "Training", len(train), quota)
            rest = set(train)
            test = [k for k in visit if k not in rest and _has(rows, members[k], test_from)][: opts.test_per_class]
            if len(test) < opts.test_per_class:
                raise _shortfall(cls, "Testing", len(test), opts.test_per_class)
        n_val = round(len(train) * opts.val_fraction)
        val = {train[i] for i in np.random.default_rng([opts.seed, c, 3]).permutation(len(train))[:n_val]}
        splits = (
            ("test", test),
            ("val", [k for k in train if k in val]),
            ("train", [k for k in train if k not in val]),
        )
        for split, ks in splits:
            folders = test_from if split == "test" else train_from
            for k in ks:
                idx = [i for i in members[k] if folders is None or rows[i].folder in folders]
                kept = idx[int(rng.integers(len(idx)))]
                rows[kept].split = split
                chosen.append(rows[kept])
                skipped += [_copy_of(rows, i, kept, direct) for i in members[k] if i != kept]
    return chosen


def _has(rows: list[Row], idx: list[int], folders: tuple[str, ...] | None) -> bool:
    return folders is None or any(rows[i].folder in folders for i in idx)


def _skipped(row: Row, note: str, of: str = "", kind: str = "") -> Row:
    return Row("", row.cls, "skipped", row.source, sha256=row.sha256, note=note, duplicate_of=of, duplicate_kind=kind)


def _copy_of(rows: list[Row], i: int, kept: int, direct: dict[tuple[int, int], CopyPair]) -> Row:
    """The skipped row of image ``i``, a copy of image ``kept`` of its cluster: the direct pair's
    kind where there is one, else "linked" (a copy of a copy)."""
    pair = direct.get((min(i, kept), max(i, kept)))
    kind = pair.kind if pair else "linked"
    # The chosen image's place in the set is named later (_name); the source path for now.
    return _skipped(rows[i], f"{kind} copy (of chosen image {rows[kept].source})", rows[kept].source, kind)


def _draw_files(opts: PrepareOptions, rows: list[Row], pairs: list[CopyPair], skipped: list[Row]) -> list[Row]:
    """``keep_duplicates``: per folder and class, files in a seeded order, the first ones taken."""
    by_place: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_place[r.folder, r.cls].append(r)
    chosen: list[Row] = []
    for c, cls in enumerate(opts.classes.names):

        def order(folder: str, stream: int, c: int = c, cls: str = cls) -> list[Row]:
            pool = by_place[folder, cls]
            return [pool[i] for i in np.random.default_rng([opts.seed, c, stream]).permutation(len(pool))]

        if ("pool", cls) in by_place:
            both = order("pool", 2)
            if opts.test_per_class is None:
                raise UserError("--keep-duplicates with a flat folder of classes needs a --test-per-class number")
            test = both[: opts.test_per_class]
            train = both[opts.test_per_class :][: opts.train_per_class]
            where = "the pool"
        else:
            train = order("train", 0)[: opts.train_per_class]
            test = order("test", 1)[: opts.test_per_class]
            where = "Training"
        for got, quota, place in ((train, opts.train_per_class, where), (test, opts.test_per_class, "Testing")):
            if quota is not None and len(got) < quota:
                raise _shortfall(cls, place, len(got), quota)
        n_val = round(len(train) * opts.val_fraction)
        val_idx = set(np.random.default_rng([opts.seed, c, 3]).permutation(len(train))[:n_val].tolist())
        for i, row in enumerate(train):
            row.split = "val" if i in val_idx else "train"
        for row in test:
            row.split = "test"
        chosen += train + test
    return chosen


def mark_duplicates(drawn: Drawn, drop_test: bool) -> list[tuple[Row, Row, CopyPair]]:
    """The copy pairs among the chosen images (``a`` before ``b`` in split order), each ``b``
    marked as a copy of ``a``; with ``drop_test``, test images with a train/val copy excluded."""
    order = {s: i for i, s in enumerate(SPLITS)}
    out = []
    for x, y, p in drawn.pairs:
        if x.split not in order or y.split not in order:
            continue
        a, b = sorted((x, y), key=lambda r: (order[r.split], r.path))
        out.append((a, b, p))
        if not b.duplicate_of or (p.kind == "exact" and b.duplicate_kind != "exact"):
            b.duplicate_of, b.duplicate_kind = a.path, p.kind
        if drop_test and b.split == "test" and a.split in ("train", "val"):
            b.excluded = f"{p.kind} copy of {a.split} image {a.path}"
    out.sort(key=lambda t: (order[t[0].split], t[0].path, order[t[1].split], t[1].path))
    return out
