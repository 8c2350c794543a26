"""vptlib data prepare: determinism, stratification, layouts, and its one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vptlib import REPO
from vptlib.data.classes import parse_classes
from vptlib.data.prepare import STAGES, PrepareOptions, prepare
from vptlib.errors import UserError


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_stratified_counts(prepared):
    df = _manifest(prepared)
    counts = df.groupby(["split", "class"]).size().unstack()
    assert (counts.loc["train"] == 24).all()
    assert (counts.loc["val"] == 6).all()
    assert (counts.loc["test"] == 20).all()
    assert set(df["class"]) == {"glioma", "meningioma", "notumor", "pituitary"}
    # Test images come from Testing/, training and validation from Training/.
    assert df[df.split == "test"]["source"].str.startswith("Testing/").all()
    assert df[df.split.isin(["train", "val"])]["source"].str.startswith("Training/").all()
    for rel in df["path"]:
        assert (prepared / rel).is_file()


def test_manifest_is_byte_identical_on_rerun(phantom_source, prepared, tmp_path):
    prepare(PrepareOptions(phantom_source, tmp_path / "again", 30, 20, seed=0))
    assert (tmp_path / "again" / "manifest.csv").read_bytes() == (prepared / "manifest.csv").read_bytes()


def test_other_seed_draws_other_images(phantom_source, prepared, tmp_path):
    prepare(PrepareOptions(phantom_source, tmp_path / "s1", 30, 20, seed=1))
    a, b = _manifest(prepared), _manifest(tmp_path / "s1")
    assert set(a.source) != set(b.source)


def test_manifest_columns_and_hashes(prepared):
    import hashlib

    df = _manifest(prepared)
    row = df.iloc[0]
    assert hashlib.sha256((prepared / row.path).read_bytes()).hexdigest() == row.sha256
    assert (row.width, row.height, row["mode"]) == ("128", "128", "RGB")
    for col in ("path", "class", "split", "sha256", "width", "height", "mode", "source"):
        assert col in df.columns


def test_sartaj_layout_and_flat_layout(phantom_source, tmp_path):
    sartaj = tmp_path / "sartaj"
    for split in ("Training", "Testing"):
        for cls in ("glioma", "meningioma", "notumor", "pituitary"):
            name = "no_tumor" if cls == "notumor" else f"{cls}_tumor"
            shutil.copytree(phantom_source / split / cls, sartaj / split / name)
    prepare(PrepareOptions(sartaj, tmp_path / "o1", 10, 5))
    assert set(_manifest(tmp_path / "o1")["class"]) == {"glioma", "meningioma", "notumor", "pituitary"}

    flat = tmp_path / "flat"
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        shutil.copytree(phantom_source / "Training" / cls, flat / cls)
    prepare(PrepareOptions(flat, tmp_path / "o2", 20, 10))
    df = _manifest(tmp_path / "o2")
    assert (df.groupby("split").size() == pd.Series({"test": 40, "train": 64, "val": 16})).all()
    # The test split is drawn from the same pool but never overlaps training.
    assert not set(df[df.split == "test"].source) & set(df[df.split != "test"].source)


def test_custom_classes(phantom_source, tmp_path):
    src = tmp_path / "two"
    shutil.copytree(phantom_source / "Training" / "glioma", src / "Tumour")
    shutil.copytree(phantom_source / "Training" / "notumor", src / "healthy")
    prepare(PrepareOptions(src, tmp_path / "o", 10, 5, classes=parse_classes("tumour,normal=healthy")))
    assert set(_manifest(tmp_path / "o")["class"]) == {"tumour", "normal"}


def test_unknown_class_folder_is_an_error(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    (src / "Training" / "astrocytoma").mkdir()
    with pytest.raises(UserError, match="astrocytoma"):
        prepare(PrepareOptions(src, tmp_path / "o", 10, 5))


def test_empty_class_is_an_error(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    shutil.rmtree(src / "Testing" / "pituitary")
    (src / "Testing" / "pituitary").mkdir()
    with pytest.raises(UserError, match="pituitary holds no image files"):
        prepare(PrepareOptions(src, tmp_path / "o", 10, 5))


def test_too_few_images_is_an_error(phantom_source, tmp_path):
    with pytest.raises(UserError, match="only 40 images that are not copies .* 41 requested"):
        prepare(PrepareOptions(phantom_source, tmp_path / "o", 41, 5))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vptlib", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--source", "/no/such/folder"], "does not exist"),
        (["--train-per-class", "999"], "requested"),
    ],
)
def test_cli_errors_are_one_line_exit_2(phantom_source, tmp_path, args, needle):
    base = ["data", "prepare", "--source", str(phantom_source), "--out", str(tmp_path / "o")]
    res = _cli(*base, *args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_prints_table(phantom_source, tmp_path):
    res = _cli(
        "data",
        "prepare",
        "--source",
        str(phantom_source),
        "--out",
        str(tmp_path / "o"),
        "--train-per-class",
        "10",
        "--test-per-class",
        "5",
    )
    assert res.returncode == 0, res.stderr
    assert "glioma" in res.stdout and "train" in res.stdout and "manifest.csv" in res.stdout


def test_all_takes_every_usable_image(phantom_source, tmp_path):
    """``all``: the whole dataset pooled (profiles/kaggle-full.yaml), split by copy cluster:
    every usable image is chosen once or skipped as a copy of a chosen one."""
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    glioma = sorted((src / "Training" / "glioma").iterdir())
    shutil.copy(glioma[0], src / "Training" / "glioma" / "copy.jpg")  # an exact duplicate: skipped, not counted
    (src / "Testing" / "notumor" / "broken.jpg").write_bytes(b"not an image")
    res = prepare(PrepareOptions(src, tmp_path / "out", train_per_class="all", test_per_class="all"))
    df = _manifest(tmp_path / "out")
    kept = df[df.split != "skipped"]
    counts = kept.groupby(["split", "class"]).size().unstack()
    # 80 clusters a class (the copy joins its original, the broken file is left out): a fifth in test
    assert counts.loc["test"].to_dict() == {"glioma": 16, "meningioma": 16, "notumor": 16, "pituitary": 16}
    assert counts.sum().to_dict() == {"glioma": 80, "meningioma": 80, "notumor": 80, "pituitary": 80}
    skipped = df[df.split == "skipped"]
    assert len(skipped) == 2 and skipped.note.str.contains("exact copy").sum() == 1
    assert res.table
    assert list(res.seconds) == list(STAGES) and all(v >= 0 for v in res.seconds.values())
    assert res.timing().startswith("took ") and "duplicate search" in res.timing()
    for bad in ("none", "0", "-3", "1.5"):
        with pytest.raises(UserError, match="per-class|whole number"):
            PrepareOptions(src, tmp_path / "x", train_per_class=bad)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "vptlib",
            "data",
            "prepare",
            "--source",
            str(src),
            "--out",
            str(tmp_path / "cli"),
            "--train-per-class",
            "all",
            "--test-per-class",
            "zero",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and "'all'" in cli.stderr and "Traceback" not in cli.stderr


def test_prepare_with_a_profile_draws_what_its_book_draws(phantom_source, tmp_path):
    """``--profile smoke`` takes the profile's ``source: prepare:`` settings: the manifest is the
    one the smoke book prepares (the same options through the library); a drawing flag beside
    it is refused."""
    from vptlib.study import profile

    res = _cli("data", "prepare", "--profile", "smoke", "--source", str(phantom_source), "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    settings = profile.load(REPO / "profiles" / "smoke.yaml", check_methods=False).source["prepare"]
    prepare(PrepareOptions(phantom_source, tmp_path / "b", **settings))
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    both = _cli("data", "prepare", "--profile", "smoke", "--source", str(phantom_source), "--out", str(tmp_path / "c"),
                "--seed", "3")  # fmt: skip
    assert both.returncode == 2 and "drop --seed" in both.stderr and "Traceback" not in both.stderr


def test_data_audit_writes_its_record_and_prints_a_table(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    one = sorted((src / "Training" / "glioma").glob("*.jpg"))[0]
    shutil.copyfile(one, src / "Testing" / "glioma" / "copy.jpg")
    res = _cli("data", "audit", str(src), "--out", str(tmp_path / "audit"))
    assert res.returncode == 0, res.stderr
    assert "copy in Training" in res.stdout and "copy clusters" in res.stdout
    record = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert record["official_test"]["glioma"]["with_copy_in_training"] == 1
    assert record["official_test"]["glioma"]["by_kind"] == {"exact": 1}
    pairs = pd.read_csv(tmp_path / "audit" / "pairs.csv")
    assert pairs.kind.tolist() == ["exact"]
    assert sorted(pairs[["a", "b"]].values.ravel()) == ["Testing/glioma/copy.jpg", f"Training/glioma/{one.name}"]
    assert (tmp_path / "audit" / "closest.png").is_file() and (tmp_path / "audit" / "shifted.csv").is_file()
    missing = _cli("data", "audit", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
