"""``vptlib data prepare``: turn a class-folder tree into the study's stratified subset
(drawn by :mod:`.draw`) and write it as one atomic set (:mod:`.sets`).

Input layouts:

* split-level (Kaggle, SARTAJ): ``Training/<class>/`` and ``Testing/<class>/``;
* flat: ``<class>/`` only; the test split is then drawn from the same pool.

Every file of the source is read once; unreadable ones are reported and left out. Copies
(:mod:`.copies`: exact, near, mirrored, re-windowed, shifted) are grouped into copy
clusters, and the splits are drawn by cluster (:mod:`.draw`), deterministic for a seed and
stratified by class, so no validation or test image has a copy in another split.

Output in ``out/``: ``images/<split>/<class>/`` copies (or symlinks), ``manifest.csv``
(one row per chosen image, plus one ``split=skipped`` row per unusable file or skipped
copy with the reason) and ``duplicates.csv`` (every copy pair among the chosen images,
and each skipped copy with the chosen image it copies).

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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vptlib import locks
from vptlib.errors import UserError

from .copies import CopyPair
from .draw import SPLITS, PrepareOptions, Row, check_seed, draw, mark_duplicates, read_source
from .manifest import MANIFEST_FIELDS
from .sets import MANIFEST, check_apart, check_ownership, commit, write_set

DUPLICATE_FIELDS = ("a", "b", "a_split", "b_split", "kind", "similarity", "transform")


def _pair_row(a: str, b: str, a_split: str, b_split: str, p: CopyPair) -> dict[str, str]:
    return {"a": a, "b": b, "a_split": a_split, "b_split": b_split, "kind": p.kind,
            "similarity": f"{p.similarity:.4f}", "transform": p.transform}  # fmt: skip


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
    # Wall seconds per stage (STAGES): what `make bench` reports as prepare's cost at each size.
    seconds: dict[str, float] = field(default_factory=dict)

    def timing(self) -> str:
        return f"took {sum(self.seconds.values()):.1f} s: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in self.seconds.items()
        )


# prepare's stages: decoding every file of the source and hashing it (sha256, dHash, pHash,
# the copy signature), the pairwise copy search over them all and the draw by cluster, and
# writing the set.
STAGES = ("read and hash", "duplicate search", "write")


def prepare(opts: PrepareOptions, progress: bool = False) -> PrepareResult:
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
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    rows, skipped = read_source(opts, progress)
    seconds = {STAGES[0]: lap()}
    drawn = draw(opts, rows, skipped)
    chosen = drawn.chosen
    inside = next((r.source for r in chosen if (opts.source / r.source).resolve().is_relative_to(opts.out)), None)
    if inside:
        raise UserError(f"--source file {inside} is a link into --out {opts.out}; prepare would replace its own input")
    pairs = mark_duplicates(drawn, opts.drop_test_duplicates)
    seconds[STAGES[1]] = lap()
    manifest = _csv([r.as_dict() for r in chosen + skipped], MANIFEST_FIELDS)
    dup_rows = [_pair_row(a.path, b.path, a.split, b.split, p) for a, b, p in pairs]
    split_of = {r.path: r.split for r in chosen}
    direct = {(x.source, y.source): p for x, y, p in drawn.pairs} | {(y.source, x.source): p for x, y, p in drawn.pairs}
    source_of = {r.path: r.source for r in chosen}
    for r in skipped:
        if r.duplicate_kind:
            p = direct.get((source_of.get(r.duplicate_of, ""), r.source))
            dup_rows.append(
                {
                    "a": r.duplicate_of,
                    "b": r.source,
                    "a_split": split_of.get(r.duplicate_of, ""),
                    "b_split": "skipped",
                    "kind": r.duplicate_kind,
                    "similarity": f"{p.similarity:.4f}" if p else "",
                    "transform": p.transform if p else "through other copies",
                }
            )
    duplicates = _csv(dup_rows, DUPLICATE_FIELDS)
    opts.out.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(opts.out, f"--out {opts.out}"):
        check_ownership(opts.out)
        files = [(row.path, (opts.source / row.source).resolve()) for row in chosen]
        commit(opts.out, write_set(opts.out, files, opts.classes.names, opts.source, opts.link, manifest, duplicates))
    seconds[STAGES[2]] = lap()
    cross = sum(a.split != b.split for a, b, _ in pairs)
    excluded = sum(bool(r.excluded) for r in chosen)
    return PrepareResult(
        opts.out / MANIFEST,
        len(chosen),
        len(skipped),
        len(pairs),
        cross,
        excluded,
        summary_table(chosen, skipped, pairs, opts.classes.names),
        seconds,
    )


def summary_table(chosen: list[Row], skipped: list[Row], pairs, names: tuple[str, ...]) -> str:
    counts = Counter((r.cls, r.split) for r in chosen if not r.excluded)
    lines = [f"{'class':<14}" + "".join(f"{s:>8}" for s in SPLITS) + f"{'skipped':>9}"]
    skip_counts = Counter(r.cls for r in skipped)
    for name in names:
        lines.append(f"{name:<14}" + "".join(f"{counts[name, s]:>8}" for s in SPLITS) + f"{skip_counts[name]:>9}")
    lines.append(
        f"{'total':<14}" + "".join(f"{sum(counts[n, s] for n in names):>8}" for s in SPLITS) + f"{len(skipped):>9}"
    )
    kinds = Counter((p.kind, "cross-split" if a.split != b.split else "within-split") for a, b, p in pairs)
    if pairs:
        lines.append("copies kept: " + ", ".join(f"{n} {k} {w}" for (k, w), n in sorted(kinds.items())))
    else:
        lines.append("copies kept: none (no two chosen images are copies)")
    reasons = Counter(r.note.split(" (")[0] for r in skipped)
    for reason, n in sorted(reasons.items()):
        lines.append(f"skipped {n}: {reason}")
    return "\n".join(lines)
