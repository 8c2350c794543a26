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

from vptlib import atomic
from vptlib.data.classes import STUDY_CLASSES, ClassMap
from vptlib.data.copies import KINDS, clusters, find_copies
from vptlib.data.draw import PrepareOptions, read_source

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


def independent_similarity(root: Path, a: str, b: str) -> float:
    """The check that does not use the copy rule's code: both images as 64x64 grey thumbnails
    (PIL's bicubic), mean-centred, their cosine as they are or with ``b`` mirrored."""
    from PIL import Image

    def vec(path: str, flip: bool = False) -> np.ndarray:
        with Image.open(root / path) as img:
            x = np.asarray(img.convert("L").resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float64)
        x = (x[:, ::-1] if flip else x).ravel()
        x = x - x.mean()
        return x / (np.linalg.norm(x) or 1.0)

    return float(max(vec(a) @ vec(b), vec(a) @ vec(b, flip=True)))


def precision(out: Path, root: Path, floor: float = 0.9, sample: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The rule's precision by the independent check: the share of ``pairs.csv`` (a seeded sample
    of ``sample`` pairs at most) whose independent similarity is at least ``floor`` and 0.95."""
    pairs = pd.read_csv(out / "pairs.csv", dtype=str, keep_default_na=False)
    take = pairs.sample(min(sample, len(pairs)), random_state=seed) if len(pairs) else pairs
    sims = np.array([independent_similarity(root, a, b) for a, b in zip(take.a, take.b, strict=True)])
    return {
        "pairs": len(pairs),
        "checked": len(take),
        f"share_at_least_{floor}": float((sims >= floor).mean()) if len(sims) else 1.0,
        "share_at_least_0.95": float((sims >= 0.95).mean()) if len(sims) else 1.0,
        "lowest": float(sims.min()) if len(sims) else 1.0,
    }


README_MARKERS = ("<!-- real-data:start -->", "<!-- real-data:end -->")


def readme_markdown(record: dict[str, Any]) -> str:
    """The README's real-data section from a saved audit record (``audit.json`` plus ``precision``
    and the kaggle-full profile's split, as ``--render`` adds them)."""
    from vptlib.data import copies as c

    o = record["official_test"]
    tests = sum(v["test_images"] for v in o.values())
    copied = sum(v["with_copy_not_only_shifted"] for v in o.values())
    pk, cl, p = record["pairs_by_kind"], record["clusters"], record["precision"]
    lines = [
        f"Measured by `vptlib data audit` on the {record['images']:,} real images in "
        f"`../shared/data/kaggle-brain-mri-224` (record: `benchmarks/results/audit-kaggle-brain-mri-224.json`):",
        "",
        "| class | Testing images | with a copy in Training | share |",
        "|---|---:|---:|---:|",
        *[
            f"| {k} | {v['test_images']:,} | {v['with_copy_not_only_shifted']:,} | "
            f"{100 * v['with_copy_not_only_shifted'] / max(1, v['test_images']):.1f}% |"
            for k, v in o.items()
        ],
        f"| all | {tests:,} | {copied:,} | {100 * copied / max(1, tests):.1f}% |",
        "",
        "Copy pairs over the whole set, by kind: " + ", ".join(f"{pk[k]:,} {k}" for k in c.KINDS) + "; "
        f"{cl['count']:,} copy clusters (largest {cl['largest']}), {len(cl['label_conflicts'])} of them filed "
        f"under two classes (skipped whole by `prepare`)"
        + (
            f"; across Training/Testing {record['cross_split']['pairs']:,} copy pairs "
            f"(and {record['cross_split']['shifted_pairs']:,} shifted)."
            if "cross_split" in record
            else "."
        ),
        f"Precision of the rule: of {p['checked']:,} pairs drawn from `pairs.csv` ({p['pairs']:,}), "
        f"{100 * p['share_at_least_0.9']:.1f}% have an independent similarity (64 px bicubic thumbnails, "
        f"mean-centred cosine, mirror allowed; code apart from the rule's) of 0.9 or more and "
        f"{100 * p['share_at_least_0.95']:.1f}% of 0.95 or more; the lowest is {p['lowest']:.3f}. Recall at that "
        f"check's 0.95: by construction every such pair is a copy (the rule's {c.SIMILAR} on the same thumbnails).",
    ]
    floors = record.get("floors") or {}
    if floors:
        lines.append(
            "Floors on the official split (trained on Training, scored on Testing, copies included): "
            + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in floors.items())
            + "."
        )
    split = record.get("kaggle_full_split")
    if split:
        lines.append(
            f"What `vptlib data prepare --profile kaggle-full` draws from them (one image per cluster): "
            f"{split['train']:,} training, {split['val']:,} validation and {split['test']:,} test images (test per "
            "class: " + ", ".join(f"{k} {n}" for k, n in split["by_class"]["test"].items()) + ")."
        )
    return "\n".join(lines)


def kaggle_full_split(source: Path, out: Path) -> dict[str, Any]:
    """What the kaggle-full profile's book prepares from ``source``: images per split and class."""
    from vptlib import REPO
    from vptlib.data.manifest import read_manifest
    from vptlib.data.prepare import PrepareOptions, prepare
    from vptlib.study.profile import load

    settings = load(REPO / "profiles" / "kaggle-full.yaml", check_methods=False).source["prepare"]
    prepare(PrepareOptions(source, out, link=True, **settings))
    counts = read_manifest(out).groupby(["split", "class"]).size()
    split = {s: int(counts[s].sum()) for s in ("train", "val", "test")}
    by_class = {s: {c: int(n) for c, n in counts[s].items()} for s in ("train", "val", "test")}
    return {**split, "by_class": by_class, "settings": settings}


def main(argv: list[str] | None = None) -> int:
    """``python -m vptlib.study.audit --render RECORD [--source DIR]``: the README's real-data
    section from a saved record; with ``--source`` the precision is measured first and saved."""
    import argparse
    import json
    import os
    import tempfile

    from vptlib import REPO
    from vptlib.bench.output import update_readme

    ap = argparse.ArgumentParser(prog="python -m vptlib.study.audit")
    ap.add_argument("--render", required=True, help="an audit.json to render into the README")
    ap.add_argument("--source", default=None, help="the audited images: measure the precision and save it")
    a = ap.parse_args(argv)
    path = Path(a.render)
    record = json.loads(path.read_text())
    if a.source:  # audit the images again (the record's counts too), then measure the precision
        with tempfile.TemporaryDirectory() as tmp:
            report = audit(a.source)
            out = write(report, tmp)
            record = {k: v for k, v in report.items() if not k.startswith("_")}
            record["source"] = os.path.relpath(report["source"], REPO)
            record["precision"] = precision(out, Path(a.source))
            record["kaggle_full_split"] = kaggle_full_split(Path(a.source), Path(tmp) / "kaggle-full")
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    update_readme(REPO / "README.md", readme_markdown(record), README_MARKERS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
