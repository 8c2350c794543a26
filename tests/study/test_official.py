"""The official split measured: every image of the source's Testing folder classified by a
finished run, marked by whether it copies an image the run learned from."""

from __future__ import annotations

import shutil

import pandas as pd
from PIL import Image, ImageOps

from vptlib import report
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.runs.engine import run
from vptlib.study import official


def test_official_split_marks_copies_and_scores_them_apart(phantom_source, tiny_model, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    train = sorted((src / "Training" / "glioma").glob("*.jpg"))
    shutil.copyfile(train[0], src / "Testing" / "glioma" / "exact.jpg")
    ImageOps.mirror(Image.open(train[1]).convert("RGB")).save(src / "Testing" / "glioma" / "flipped.jpg", quality=95)
    data = tmp_path / "data"
    # every Training image is drawn, so both originals are among the images the run learns from
    prepare(PrepareOptions(src, data, train_per_class=40, test_per_class=20, val_fraction=0.2))
    runs = tmp_path / "runs"
    run(method="zero_shot", data=str(data), model=str(tiny_model), epochs=0, device="cpu", out=str(runs),
        profile="t", progress=False)  # fmt: skip
    images = official.official_images(data)
    assert len(images) == 4 * 40 + 2
    copies = images[images["copy"] != ""]
    assert sorted(p.rsplit("/", 1)[1] for p in copies.path) == ["exact.jpg", "flipped.jpg"]
    assert sorted(copies["copy"]) == ["exact", "mirrored"]
    found = report.latest_runs(runs, "t")
    table = official.official_table({"Zero-shot": found["zero_shot"]}, images)
    row = table.loc["Zero-shot"]
    assert (row["all: images"], row["copies: images"], row["the rest: images"]) == (162, 2, 160)
    cached = list(found["zero_shot"].glob("official-*.csv"))
    assert len(cached) == 1
    pred = pd.read_csv(cached[0], dtype=str, keep_default_na=False)
    truth = images["class"].to_numpy()
    assert row["all: accuracy (%)"] == round(100 * (pred.pred.to_numpy() == truth).mean(), 1)
    by_class = official.official_by_class({"Zero-shot": found["zero_shot"]}, images)
    assert "glioma: copies (2)" in " ".join(by_class.columns).replace("Glioma", "glioma")
    leak = official.leakage_by_class(images)
    assert leak["copies of a training image"].sum() == 2
    assert report.official_accuracy(runs, "t", images).index.tolist() == ["Zero-shot CLIP"]
