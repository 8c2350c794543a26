"""Every path built from what a user or a file says stays inside the folder it belongs to,
or is refused before anything is written; a build deletes only the files it wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vptlib.data.classes import parse_classes
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.errors import UserError
from vptlib.paths import component, inside
from vptlib.report.loading import latest_group
from vptlib.study import book

ROOT = Path(__file__).resolve().parents[1]
ESCAPES = ["../victim", "../../../../../victim", "a/b", "/abs", "..", ".hidden", "x y", "a\\b", "c\x00d", ""]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ESCAPES)
def test_a_name_that_becomes_a_folder_is_one_plain_component(name):
    with pytest.raises(UserError, match="not a plain name"):
        component(name, "class name")


@pytest.mark.parametrize("name", [n for n in ESCAPES if n.strip(".") and "\x00" not in n])
def test_prepare_refuses_a_class_name_that_leaves_out_before_writing(name, phantom_source, tmp_path):
    # A source whose class folders would match the hostile name's letters (the old bug).
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    for split in ("Training", "Testing"):
        (src / split / "glioma").rename(src / split / "victim")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("a user's file")
    before = _snapshot(tmp_path)
    spec = f"{name},meningioma,notumor,pituitary"
    with pytest.raises(UserError):
        parse_classes(spec)
    with pytest.raises(UserError):
        prepare(PrepareOptions(src, tmp_path / "out", train_per_class=3, test_per_class=2, classes=parse_classes(spec)))
    assert _snapshot(tmp_path) == before
    if name not in ("../victim", "a/b"):
        return  # the command line, once for a parent escape and once for a separator (each ~8 s)
    done = subprocess.run(
        [sys.executable, "-m", "vptlib", "data", "prepare", "--source", str(src), "--out", str(tmp_path / "out")]
        + ["--train-per-class", "3", "--test-per-class", "2", "--classes", spec],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert _snapshot(tmp_path) == before  # nothing written anywhere, the user's file untouched


def test_inside_follows_symlinks(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "base", "a/b", "x") == tmp_path / "base" / "a" / "b"
    for rel in ("../x", "link/x", "/etc/passwd"):
        with pytest.raises(UserError, match="points outside"):
            inside(tmp_path / "base", rel, "run")


@pytest.mark.parametrize(
    "runs, seeds, why",
    [
        (["../../../elsewhere"], [0], "not a plain name"),
        (["/tmp"], [0], "not a plain name"),
        (["20260101-000000-0a0b0c0d", "20260101-000000-0a0b0c0d"], [0, 1], "twice"),
        (["20260101-000000-0a0b0c0d", "20260101-000001-0a0b0c0d"], [1, 1], "twice"),
        (["20260101-000000-0a0b0c0d"], [0, 1], "twice"),
    ],
)
def test_a_group_file_names_only_runs_of_its_method_each_seed_once(tmp_path, runs, seeds, why):
    root = tmp_path / "p" / "linear"
    for name in runs:
        if "/" not in name:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "metrics.json").write_text("{}")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "metrics.json").write_text("{}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "group.json").write_text(json.dumps({"runs": runs, "seeds": seeds}))
    with pytest.raises(UserError, match=why):
        latest_group(tmp_path, "p", "linear")


@pytest.mark.parametrize("key, value", [("profile", "../other"), ("profile", "a b"), ("sweep", "../../x")])
def test_a_profile_name_or_sweep_name_cannot_leave_the_runs_folder(tmp_path, key, value):
    from vptlib.study import profile as profile_mod

    text = (ROOT / "profiles" / "smoke.yaml").read_text()
    text = text.replace("profile: smoke", f"profile: {json.dumps(value)}") if key == "profile" else text
    text = text.replace("  fewshot:\n", f"  {json.dumps(value)}:\n") if key == "sweep" else text
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="not a plain name"):
        profile_mod.load(path)


def test_a_build_deletes_only_the_pages_it_wrote(tmp_path):
    gen = tmp_path / "generated"
    book.guard("smoke", gen)
    for rel in ("dataset.ipynb", "experiments/linear.ipynb", "experiments/vpt_deep.failed.ipynb"):
        (gen / rel).parent.mkdir(parents=True, exist_ok=True)
        (gen / rel).write_text("{}")
        book.record_output(gen / rel)
    (gen / "notes.md").write_text("mine")
    (gen / "experiments" / "mine.ipynb").write_text("my own notebook")
    # An entry planted in the list that points outside is never followed.
    (tmp_path / "precious.txt").write_text("keep")
    with open(gen / book.OUTPUTS, "a") as f:
        f.write("../precious.txt\n")
    with pytest.raises(UserError, match="holds the 'smoke' build"):
        book.guard("full", gen, clear=False)  # make run: refuses, deletes nothing
    assert (gen / "dataset.ipynb").is_file()
    book.guard("full", gen)  # make book with another profile: removes its own pages only
    assert (gen / book.OUTPUTS).read_text() == ""  # the new build's list starts empty
    assert sorted(p.relative_to(gen).as_posix() for p in gen.rglob("*") if p.is_file()) == [
        book.OUTPUTS,
        "PROFILE",
        "experiments/mine.ipynb",
        "notes.md",
    ]
    assert (gen / "PROFILE").read_text().strip() == "full"
    assert (tmp_path / "precious.txt").read_text() == "keep"
    book.clean(gen)  # make clean
    assert sorted(p.relative_to(gen).as_posix() for p in gen.rglob("*") if p.is_file()) == [
        "experiments/mine.ipynb",
        "notes.md",
    ]


def test_the_makefile_never_removes_the_generated_folder_whole():
    text = (ROOT / "Makefile").read_text()
    assert "rm -rf _build .pytest_cache $(GEN)" not in text and "book clean --dir $(GEN)" in text
