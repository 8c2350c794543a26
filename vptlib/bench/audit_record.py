"""The audit of the real images as a record the repo keeps: the rule's precision by an
independent check, what the kaggle-full profile draws, and the README section rendered from
it (``python -m vptlib.bench --render-audit RECORD [--source DIR]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vptlib import GUIDE, REPO, atomic
from vptlib.study.audit import audit, write


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


def render(path: Path, source: Path | None = None) -> None:
    """The README's real-data section from the audit record at ``path``; with ``source`` the
    images are audited again first (counts, precision, the kaggle-full draw) and the record saved."""
    import os
    import tempfile

    from vptlib.bench.output import update_readme

    record = json.loads(path.read_text())
    if source:
        with tempfile.TemporaryDirectory() as tmp:
            report = audit(source)
            out = write(report, tmp)
            record = {k: v for k, v in report.items() if not k.startswith("_")}
            record["source"] = os.path.relpath(report["source"], REPO)
            record["precision"] = precision(out, Path(source))
            record["kaggle_full_split"] = kaggle_full_split(Path(source), Path(tmp) / "kaggle-full")
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    update_readme(GUIDE, readme_markdown(record), README_MARKERS)  # the user guide's real-data section
