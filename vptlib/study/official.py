"""The official split as published, measured: a labelled secondary evaluation.

Published results on the Kaggle brain-MRI set train on its Training folder and report on
its Testing folder, three quarters of which are copies of Training images. Here every
image of the source's Testing folder is classified by a finished run and marked by
whether it is a copy (:mod:`vptlib.data.copies`, the rule ``prepare`` splits by) of an
image the run learned from (the prepared training and validation images, all drawn from
the Training folder). Accuracy and balanced accuracy on the copies and on the rest, per
method and per class, show how much of a number on the official split is memory, and
whether a gap is a class-mix effect (balanced accuracy removes the mix) or a real one.

The study's own test images are among the official ones (drawn from the Testing folder,
never a copy of a training image). Predictions are kept in the run folder
(``official-<images hash>.csv``), so a rebuild classifies nothing twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from vptlib import atomic
from vptlib.data.copies import Signature, find_copies, sha256_file

SUBSETS = ("copies", "the rest")


def official_images(data_root: str | Path) -> pd.DataFrame:
    """Every usable image of the source's Testing folder: ``path`` (absolute), ``class``, and
    ``copy``: the kind of its strongest copy among the prepared train and validation images,
    or empty. Empty when the set's source (or its Testing folder) is not here."""
    from PIL import Image

    from vptlib.data.classes import STUDY_CLASSES, ClassMap
    from vptlib.data.draw import PrepareOptions, read_source
    from vptlib.data.manifest import read_manifest
    from vptlib.data.sets import set_info

    info = set_info(data_root) or {}
    source = Path(info.get("source") or "")
    if not info.get("source") or not source.is_dir():
        return pd.DataFrame(columns=["path", "class", "copy"])
    names = tuple(info.get("classes") or STUDY_CLASSES.names)
    classes = STUDY_CLASSES if names == STUDY_CLASSES.names else ClassMap(names, {})
    rows, _ = read_source(PrepareOptions(source, source, classes=classes))
    tests = [r for r in rows if r.folder == "test"]
    if not tests:
        return pd.DataFrame(columns=["path", "class", "copy"])
    root = Path(data_root)
    seen = read_manifest(root).query("split != 'test'")
    seen_sigs = []
    for p in seen.path:
        with Image.open(root / p) as img:
            seen_sigs.append(Signature.of(img))
    shas = [r.sha256 for r in tests] + [sha256_file(root / p) for p in seen.path]
    kinds: dict[int, str] = {}
    for p in find_copies(shas, [r.signature for r in tests] + seen_sigs):
        if (p.a < len(tests)) != (p.b < len(tests)):
            kinds.setdefault(min(p.a, p.b), p.kind)
    return pd.DataFrame(
        {
            "path": [str(source / r.source) for r in tests],
            "class": [r.cls for r in tests],
            "copy": [kinds.get(i, "") for i in range(len(tests))],
        }
    )


def predictions(run_dir: str | Path, images: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """``images`` with the run's ``pred`` added; read from the run folder when made before."""
    from vptlib.runs.predict import load_predictor

    key = hashlib.sha256("\n".join(images.path).encode()).hexdigest()[:12]
    cached = Path(run_dir) / f"official-{key}.csv"
    if cached.is_file():
        pred = pd.read_csv(cached, dtype=str, keep_default_na=False)
    else:
        pred = load_predictor(run_dir, device=device).predict_files(images.path)[["path", "pred", "error"]]
        atomic.write_text(cached, pred.to_csv(index=False))
    return images.assign(pred=pred.pred.to_numpy())


def _accuracies(df: pd.DataFrame) -> dict[str, float]:
    ok = df.pred == df["class"]
    balanced = ok.groupby(df["class"]).mean().mean() if len(df) else np.nan
    return {"images": len(df), "accuracy (%)": 100 * ok.mean() if len(df) else np.nan, "balanced (%)": 100 * balanced}


def official_table(runs: dict[str, Path], images: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """Per method (``runs``: display name -> run folder): accuracy and balanced accuracy on all
    official test images, on the copies and on the rest."""
    rows = []
    for name, run in runs.items():
        df = predictions(run, images, device)
        copy = df["copy"] != ""
        row = {"method": name}
        for label, part in (("all", df), ("copies", df[copy]), ("the rest", df[~copy])):
            for k, v in _accuracies(part).items():
                row[f"{label}: {k}"] = v
        rows.append(row)
    return pd.DataFrame(rows).set_index("method").round(1)


def official_by_class(runs: dict[str, Path], images: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """Per method and class: accuracy (%) on the copies and on the rest (their image counts in the header)."""
    from vptlib.data.classes import DISPLAY_NAMES

    cols = {}
    for cls in dict.fromkeys(images["class"]):
        for sub in SUBSETS:
            n = int(((images["class"] == cls) & ((images["copy"] != "") == (sub == "copies"))).sum())
            cols[cls, sub] = f"{DISPLAY_NAMES.get(cls, cls)}: {sub} ({n})"
    rows = []
    for name, run in runs.items():
        df = predictions(run, images, device)
        row = {"method": name}
        for (cls, sub), label in cols.items():
            part = df[(df["class"] == cls) & ((df["copy"] != "") == (sub == "copies"))]
            row[label] = 100 * (part.pred == part["class"]).mean() if len(part) else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("method").round(1)


def leakage_by_class(images: pd.DataFrame) -> pd.DataFrame:
    """Per class: official test images, and how many are copies of an image the runs learned from."""
    from vptlib.data.classes import DISPLAY_NAMES

    g = images.groupby("class", sort=False)
    out = pd.DataFrame(
        {"official test images": g.size(), "copies of a training image": g["copy"].agg(lambda c: (c != "").sum())}
    )
    out["share (%)"] = (100 * out.iloc[:, 1] / out.iloc[:, 0]).round(1)
    return out.rename(index=lambda c: DISPLAY_NAMES.get(c, c))
