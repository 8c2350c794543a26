"""``vptlib data audit SOURCE``: the leakage report of a source tree, before any split is drawn.

Every usable image of the source is compared with every other by the copy rule that
``prepare`` splits by (:mod:`vptlib.data.copies`). The report counts copies by kind, class
and pair of source folders (``train/test``: a Testing image with a copy in Training), the
Testing images that have a copy in Training per class (how much of an accuracy on the
official split is memory), the copy clusters, the copies filed under two classes, and the
floors (:mod:`vptlib.study.shortcuts`) trained on the source's own training folder and
scored on its test folder.

It writes ``audit.json`` (the counts), ``pairs.csv`` (one row a pair: both paths, their
folders and classes, kind, cosine, transform), ``shifted.csv`` (pairs that only a shift or
crop matches: their cosine as they are lies below the near rule, so they are kept apart
from the pairs a plain thumbnail comparison confirms) and ``closest.png`` (cross-folder
copies as images, one column a pair).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vptlib import REPO, atomic
from vptlib.data.classes import STUDY_CLASSES, ClassMap
from vptlib.data.copies import KINDS, clusters, find_copies
from vptlib.data.draw import PrepareOptions, read_source

# The audit of the 224-px copy of the Kaggle images that the repo keeps (made by
# ``python -m vptlib.bench --render-audit``): the README's and the Dataset page's numbers on the
# real images, and the kaggle-full profile's drawn sizes.
KAGGLE_AUDIT = REPO / "benchmarks" / "results" / "audit-kaggle-brain-mri-224.json"
PAIR_FIELDS = ("a", "b", "a_folder", "b_folder", "a_class", "b_class", "kind", "similarity", "transform")
FOLDERS = {"train": "Training", "test": "Testing", "pool": "pool"}


def _where(a: str, b: str) -> str:
    """``train/test`` for a pair across folders (in that order), ``train/train`` within one."""
    order = ("train", "pool", "test")
    x, y = sorted((a, b), key=order.index)
    return f"{x}/{y}"


def audit(source: str | Path, classes: ClassMap = STUDY_CLASSES, progress: bool = False) -> dict[str, Any]:
    """The counts of ``audit.json`` plus the rows of its CSVs (``_pairs``, ``_shifted``) and the
    source's rows (``_rows``), for :func:`write`."""
    source = Path(source).resolve()
    rows, skipped = read_source(PrepareOptions(source, source, classes=classes), progress)
    pairs = find_copies([r.sha256 for r in rows], [r.signature for r in rows])
    label = clusters(len(rows), pairs)
    by_kind: Counter = Counter()
    for p in pairs:
        a, b = rows[p.a], rows[p.b]
        same = a.cls if a.cls == b.cls else "/".join(sorted((a.cls, b.cls)))
        by_kind[p.kind, same, _where(a.folder, b.folder)] += 1
    # Per class: Testing images with a copy in Training, by their strongest kind (KINDS order).
    test_copy: dict[int, str] = {}
    for p in pairs:
        for t, o in ((p.a, p.b), (p.b, p.a)):
            if rows[t].folder == "test" and rows[o].folder == "train":
                old = test_copy.get(t)
                if old is None or KINDS.index(p.kind) < KINDS.index(old):
                    test_copy[t] = p.kind
    official = {}
    for cls in classes.names:
        tests = [i for i, r in enumerate(rows) if r.folder == "test" and r.cls == cls]
        kinds = Counter(test_copy[i] for i in tests if i in test_copy)
        official[cls] = {
            "test_images": len(tests),
            "with_copy_in_training": sum(kinds.values()),
            "with_copy_not_only_shifted": sum(n for k, n in kinds.items() if k != "shifted"),
            "by_kind": dict(sorted(kinds.items())),
        }
    members: dict[int, list[int]] = {}
    for i, c in enumerate(label):
        members.setdefault(int(c), []).append(i)
    mixed = [sorted(rows[i].source for i in m) for m in members.values() if len({rows[i].cls for i in m}) > 1]
    report: dict[str, Any] = {
        "source": str(source),
        "images": len(rows),
        "unusable_files": len(skipped),
        "images_by_folder_and_class": {
            f: {c: sum(r.folder == f and r.cls == c for r in rows) for c in classes.names}
            for f in sorted({r.folder for r in rows})
        },
        "pairs": [{"kind": k, "class": c, "folders": w, "pairs": n} for (k, c, w), n in sorted(by_kind.items())],
        "pairs_by_kind": {k: sum(n for (kk, _, _), n in by_kind.items() if kk == k) for k in KINDS},
        "official_test": official,
        # Copies across the source's folders: pairs (shifted ones apart, as in pairs.csv and
        # shifted.csv) and the Testing images with at least one copy in Training.
        "cross_split": {
            "pairs": sum(n for (k, _, w), n in by_kind.items() if w == "train/test" and k != "shifted"),
            "shifted_pairs": sum(n for (k, _, w), n in by_kind.items() if w == "train/test" and k == "shifted"),
            "test_images_with_copy": sum(o["with_copy_not_only_shifted"] for o in official.values()),
        },
        "clusters": {
            "count": len(members),
            "by_class": {c: len({int(label[i]) for i, r in enumerate(rows) if r.cls == c}) for c in classes.names},
            "largest": max((len(m) for m in members.values()), default=0),
            "label_conflicts": mixed,
        },
        "floors": _floors(source, rows),
    }
    report["_pairs"] = [_pair(rows, p) for p in pairs if p.kind != "shifted"]
    report["_shifted"] = [_pair(rows, p) for p in pairs if p.kind == "shifted"]
    report["_rows"] = rows
    return report


def _pair(rows, p) -> dict[str, str]:
    a, b = rows[p.a], rows[p.b]
    return dict(zip(PAIR_FIELDS, (a.source, b.source, a.folder, b.folder, a.cls, b.cls, p.kind,
                                  f"{p.similarity:.4f}", p.transform), strict=True))  # fmt: skip


def _floors(source: Path, rows) -> dict[str, Any]:
    """The shape and low-level floors, trained on the training folder and scored on the test folder."""
    from vptlib.study.shortcuts import low_level_floors, shape_floor

    if not {"train", "test"} <= {r.folder for r in rows}:
        return {}
    df = pd.DataFrame(
        {
            "path": [r.source for r in rows],
            "class": [r.cls for r in rows],
            "split": [r.folder for r in rows],
            "width": [r.width for r in rows],
            "height": [r.height for r in rows],
            "excluded": "",
        }
    )
    return {"shape": shape_floor(df), **low_level_floors(source, df)}


def _csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PAIR_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write(report: dict[str, Any], out: str | Path) -> Path:
    """``audit.json``, ``pairs.csv``, ``shifted.csv`` and ``closest.png`` in ``out``, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "pairs.csv", _csv(report["_pairs"]))
    atomic.write_text(out / "shifted.csv", _csv(report["_shifted"]))
    atomic.write_json(out / "audit.json", {k: v for k, v in report.items() if not k.startswith("_")})
    fig = closest_figure(report)
    if fig is not None:
        atomic.atomic_write(out / "closest.png", lambda p: fig.savefig(p, format="png", dpi=110))
    return out


def closest_figure(report: dict[str, Any], per_kind: int = 2):
    """Cross-folder copies as images: ``per_kind`` of each kind, the weakest match of each first
    (what the rule still calls a copy), the two images one above the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cross = [p for p in report["_pairs"] + report["_shifted"] if p["a_folder"] != p["b_folder"]]
    chosen = []
    for kind in KINDS:
        of = sorted((p for p in cross if p["kind"] == kind), key=lambda p: float(p["similarity"]))
        chosen += of[:per_kind]
    if not chosen:
        return None
    root = Path(report["source"])
    fig, axes = plt.subplots(2, len(chosen), figsize=(1.6 * len(chosen), 3.8), squeeze=False)
    for j, p in enumerate(chosen):
        for i, key in enumerate(("a", "b")):
            ax = axes[i, j]
            with Image.open(root / p[key]) as img:
                ax.imshow(np.asarray(img.convert("L")), cmap="gray")
            ax.set_axis_off()
            ax.set_title(f"{FOLDERS[p[key + '_folder']]}" + (f"\n{p['kind']} {float(p['similarity']):.3f}" if i else ""),
                         fontsize=7)  # fmt: skip
    fig.tight_layout()
    plt.close(fig)
    return fig


def table(report: dict[str, Any]) -> str:
    """The short table ``vptlib data audit`` prints."""
    kinds = [k for k in KINDS if k != "shifted"]
    head = f"{'class':<12}{'Testing':>8}{'copy in Training':>18}" + "".join(f"{k:>13}" for k in [*kinds, "shifted"])
    lines = [head]
    for cls, o in report["official_test"].items():
        lines.append(
            f"{cls:<12}{o['test_images']:>8}{o['with_copy_not_only_shifted']:>18}"
            + "".join(f"{o['by_kind'].get(k, 0):>13}" for k in [*kinds, "shifted"])
        )
    tot = report["official_test"].values()
    lines.append(
        f"{'total':<12}{sum(o['test_images'] for o in tot):>8}{sum(o['with_copy_not_only_shifted'] for o in tot):>18}"
    )
    pk = report["pairs_by_kind"]
    c = report["clusters"]
    x = report["cross_split"]
    lines.append(
        f"across Training/Testing: {x['pairs']:,} copy pairs (and {x['shifted_pairs']:,} shifted), "
        f"{x['test_images_with_copy']:,} Testing images with a copy in Training"
    )
    lines.append("copy pairs: " + ", ".join(f"{pk[k]:,} {k}" for k in KINDS))
    lines.append(
        f"{report['images']:,} images in {c['count']:,} copy clusters (largest {c['largest']}); "
        f"{len(c['label_conflicts'])} clusters filed under two classes"
    )
    for name, f in report["floors"].items():
        lines.append(f"floor ({name}): {100 * f['accuracy']:.1f}% on {f['test_images']} Testing images")
    return "\n".join(lines)
