"""Never lose a user's data, never trust what vptlib did not write, and no tracebacks.

Each test is one class of fault: a command that would delete its own input or a user's
files, a kill at any instant of a data-set swap, reuse across changed inputs, a
manifest or state file that is not what vptlib wrote, hostile parameters, and errors
that must be one line with exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import diverging_at, namespaces_work, on_a_full_disk, tiny_config
from PIL import Image
from safetensors.torch import load_file

from vptlib import atomic, locks
from vptlib.cli import app as cli
from vptlib.data import prepare as prep_mod
from vptlib.data.dataset import Preprocess, load_data
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.errors import TrainingDiverged, UserError
from vptlib.runs import records
from vptlib.runs.engine import RunConfig, run

ROOT = Path(__file__).resolve().parents[2]


def _opts(src, out, **kw) -> PrepareOptions:
    return PrepareOptions(src, out, **{"train_per_class": 10, "test_per_class": 5, "seed": 0, **kw})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vptlib", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _one_line_exit_2(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("vptlib: error:")]
    assert len(line) == 1, done.stderr
    for n in needles:
        assert n in line[0], (n, line[0])


# ------------------------------------------------------------------ prepare never deletes its input
def test_prepare_refuses_a_source_inside_out(phantom_source, tmp_path):
    out = tmp_path / "O"
    shutil.copytree(phantom_source, out / "images")
    before = _snapshot(out)
    with pytest.raises(UserError, match="inside --out"):
        prepare(_opts(out / "images", out))
    assert _snapshot(out) == before


def test_prepare_refuses_overlap_through_symlinks(phantom_source, tmp_path):
    out = tmp_path / "O"
    shutil.copytree(phantom_source, out / "raw")
    (tmp_path / "alias").symlink_to(out / "raw")  # the source, reached through a link
    with pytest.raises(UserError, match="inside --out"):
        prepare(_opts(tmp_path / "alias", out))
    # A source whose class folder links into a prepared --out: its files would be replaced.
    done = tmp_path / "done"
    prepare(_opts(phantom_source, done))
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src, symlinks=True)
    shutil.rmtree(src / "Training" / "glioma")
    (src / "Training" / "glioma").symlink_to(done / "images" / "train" / "glioma")
    before = _snapshot(done)
    with pytest.raises(UserError, match="into --out"):
        prepare(_opts(src, done, train_per_class=5, test_per_class=5))
    assert _snapshot(done) == before
    with pytest.raises(UserError, match="inside --source"):
        prepare(_opts(phantom_source, phantom_source / "Training" / "out"))


@pytest.mark.parametrize("planted", ["images", "manifest.csv", ".images.old", ".images.partial", "current", ".sets"])
def test_prepare_never_replaces_what_it_did_not_write(planted, phantom_source, tmp_path):
    out = tmp_path / "O"
    target = out / planted
    if planted.endswith(".csv"):
        out.mkdir()
        target.write_text("path,class\nmine.jpg,glioma\n")
    else:
        (target / "sub").mkdir(parents=True)
        (target / "sub" / "mine.jpg").write_bytes(b"user data")
    before = _snapshot(out)
    with pytest.raises(UserError, match="did not write"):
        prepare(_opts(phantom_source, out))
    assert _snapshot(out) == before


def test_prepare_replaces_its_own_set_and_keeps_other_files(phantom_source, tmp_path):
    out = tmp_path / "O"
    prepare(_opts(phantom_source, out))
    (out / "notes.txt").write_text("mine")
    first = (out / "manifest.csv").read_bytes()
    prepare(_opts(phantom_source, out, seed=1))
    assert (out / "manifest.csv").read_bytes() != first
    assert (out / "notes.txt").read_text() == "mine"
    assert len(list((out / ".sets").iterdir())) == 1  # the old set is gone, nothing else
    load_data(out, Preprocess())  # consistent: every row's file exists with its hash


def test_a_kill_at_any_instant_leaves_the_old_or_the_new_set(tmp_path, monkeypatch):
    """Interrupt prepare at every filesystem step of writing and swapping a set: the folder
    always holds one complete, consistent set (the old or the new), and the next prepare
    finishes and cleans up."""
    from vptlib.data.phantoms import write_phantoms

    # Some 60 prepares: a small source (16 images a class, 64 px) has every step a large one
    # has, at a third of the time each.
    phantom_source = write_phantoms(tmp_path / "source", per_class=16, size=64, seed=0)
    out = tmp_path / "O"
    prepare(_opts(phantom_source, out))
    old = (out / "manifest.csv").read_bytes()
    new_bytes = None
    ops = [(os, "replace"), (os, "symlink"), (shutil, "copyfile"), (Path, "rename"), (Path, "mkdir")]
    originals = {(m, n): getattr(m, n) for m, n in ops}
    counter = {"n": 0, "stop": None}

    def wrap(m, n):
        def inner(*a, **k):
            counter["n"] += 1
            if counter["stop"] is not None and counter["n"] >= counter["stop"]:
                raise KeyboardInterrupt("killed")
            return originals[m, n](*a, **k)

        return inner

    for m, n in ops:
        monkeypatch.setattr(m, n, wrap(m, n))
    counter["stop"] = None
    counter["n"] = 0
    prepare(_opts(phantom_source, tmp_path / "probe", seed=1))
    steps = counter["n"]
    step = max(1, steps // 40)
    for stop in [*range(1, steps, step), steps - 2, steps - 1]:
        counter["n"], counter["stop"] = 0, stop
        with contextlib.suppress(KeyboardInterrupt):
            prepare(_opts(phantom_source, out, seed=1))
        counter["stop"] = None
        now = (out / "manifest.csv").read_bytes()
        new_bytes = new_bytes or (now if now != old else None)
        assert now in (old, new_bytes)
        load_data(out, Preprocess(), verify=True)  # every row present with its hash
        if now != old:  # committed: put the old set back for the next interruption
            prepare(_opts(phantom_source, out))
    prepare(_opts(phantom_source, out, seed=1))
    assert [p.name for p in (out / ".sets").iterdir() if p.name.endswith(".partial")] == []
    assert len(list((out / ".sets").iterdir())) == 1


def test_two_prepares_on_one_out_do_not_both_proceed(phantom_source, tmp_path):
    out = tmp_path / "O"
    out.mkdir()
    with locks.exclusive(out, f"--out {out}"), pytest.raises(UserError, match=f"in use by pid {os.getpid()}"):
        prepare(_opts(phantom_source, out))


# ------------------------------------------------------------------ make never wipes before it validates
@pytest.fixture()
def make_repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    for rel in ("Makefile", "requirements.txt", "pyproject.toml"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    for folder in ("profiles", "notebooks", "vptlib"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".venv").symlink_to(ROOT / ".venv")
    tiny = Path(os.environ.get("VPTLIB_TINY_MODEL", ROOT / "models" / "tiny-clip"))
    # Both smoke models up to date for make, so the smoke cases reach `run` itself instead of
    # warming a tiny model up first (some 35 s a case).
    for src, name in ((tiny, "tiny-clip"), (ROOT / "models" / "tiny-clip-b", "tiny-clip-b")):
        if (src / "model.safetensors").is_file():
            shutil.copytree(src, repo / "models" / name)
            for f in (repo / "models" / name).iterdir():
                os.utime(f)
    gen = repo / "book" / "generated"
    (gen / "experiments").mkdir(parents=True)
    (gen / "PROFILE").write_text("smoke\n")
    (gen / "experiments" / "linear.ipynb").write_text("{}")
    return repo


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["NB=linear", "PROFILE=smok"], "PROFILE=smok is not in profiles/"),  # a typo in the profile
        (["NB=vpt_deep", "ARGS=-p lr 0.5"], "holds the 'smoke' build"),  # PROFILE defaults to full
        (["NB=../../x", "PROFILE=smoke"], "unknown method '../../x'"),  # not a method, and a path
        (["NB=linear;touch pwned", "PROFILE=smoke"], "unknown method 'linear;touch pwned'"),
        (["NB=linear", "PROFILE=smoke", 'ARGS=-p \'open("pwned", "w")#\' 1'], "unknown parameter"),  # code
        (["NB=linear", "PROFILE=smoke", "ARGS=-p nonsense 1"], "unknown parameter 'nonsense'"),
        (["NB=linear", "PROFILE=smoke x"], "PROFILE must be one profile name"),
    ],
)
def test_make_run_validates_before_it_writes(args, said, make_repo):
    before = _snapshot(make_repo / "book")
    done = subprocess.run(
        ["make", "--no-print-directory", "run", *args],
        cwd=make_repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _snapshot(make_repo / "book") == before
    assert not (make_repo / "pwned").exists() and not (ROOT / "pwned").exists()
    assert not list(make_repo.rglob("x.ipynb"))


def test_execute_refuses_unknown_parameter_names(tmp_path):
    from vptlib.study import notebooks

    with pytest.raises(UserError, match="unknown parameter"):
        notebooks.execute(
            ROOT / "notebooks" / "experiment.ipynb",
            tmp_path / "o.ipynb",
            ROOT / "profiles" / "smoke.yaml",
            {"import os; os.system('id')#": 1},
        )
    assert not (tmp_path / "o.ipynb").exists()


def test_execute_writes_atomically_without_warnings(tmp_path):
    """A page is written through a temporary file, and papermill's warning about its name stays out of the log."""
    import warnings

    import nbformat

    from vptlib.study import notebooks

    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("# t"),
        nbformat.v4.new_code_cell("profile_path = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(profile_path)"),
    ]
    template = tmp_path / "t.ipynb"
    nbformat.write(nb, template)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = notebooks.execute(template, tmp_path / "out" / "t.ipynb", ROOT / "profiles" / "smoke.yaml", {})
    assert "smoke.yaml" in out.read_text()
    assert not [w for w in seen if "does not end in one of" in str(w.message)], [str(w.message) for w in seen]
    assert [f.name for f in out.parent.iterdir()] == ["t.ipynb"]  # no temporary file left behind


# ------------------------------------------------------------------ reuse and resume check their inputs
def _cfg(data, model, out, **kw) -> RunConfig:
    return tiny_config(data, model, out, **{"epochs": 3, **kw})


def _interrupted_run(cfg: RunConfig, monkeypatch) -> Path:
    """A run killed after its first epoch: state.pt and no metrics.json."""
    from vptlib.runs import training as engine

    real = engine._train_epoch
    calls = {"n": 0}

    def once(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "_train_epoch", once)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    monkeypatch.setattr(engine, "_train_epoch", real)
    (run_dir,) = [p for p in records.run_dirs(Path(cfg.out) / cfg.profile / cfg.method)]
    assert (run_dir / "state.pt").is_file() and not (run_dir / "metrics.json").exists()
    return run_dir


def test_resume_and_reuse_refuse_changed_data(phantom_source, tiny_model, tmp_path, monkeypatch):
    data = tmp_path / "data"
    prepare(_opts(phantom_source, data))
    cfg = _cfg(data, tiny_model, tmp_path / "runs")
    run_dir = _interrupted_run(cfg, monkeypatch)
    prepare(_opts(phantom_source, data, seed=1))  # the data changes between the kill and --resume
    with pytest.raises(UserError, match=r"cannot resume .*the data \(manifest.csv\) changed"):
        run(cfg, resume=True, progress=False)
    assert not (run_dir / "metrics.json").exists()
    done = run(dataclasses_replace(cfg, epochs=1), progress=False)
    prepare(_opts(phantom_source, data, seed=2))
    with pytest.raises(UserError, match=r"cannot reuse .*the data"):
        run(dataclasses_replace(cfg, epochs=1), reuse=True, progress=False)
    assert done.run_dir.is_dir()


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_resume_refuses_a_changed_model(prepared, tmp_path, monkeypatch):
    from vptlib.models.offline import write_tiny_clip

    model = tmp_path / "model"
    write_tiny_clip(model, seed=0)
    cfg = _cfg(prepared, model, tmp_path / "runs")
    _interrupted_run(cfg, monkeypatch)
    write_tiny_clip(model, seed=1)  # the model folder is replaced
    with pytest.raises(UserError, match=r"cannot resume .*the model's weights changed"):
        run(cfg, resume=True, progress=False)


def test_a_run_in_use_cannot_be_resumed_twice(prepared, tiny_model, tmp_path, monkeypatch):
    cfg = _cfg(prepared, tiny_model, tmp_path / "runs")
    run_dir = _interrupted_run(cfg, monkeypatch)
    with locks.exclusive(run_dir, "held"), pytest.raises(UserError, match="in use by pid"):
        run(cfg, resume=True, progress=False)
    assert run(cfg, resume=True, progress=False).run_dir == run_dir  # once free, it resumes


# A pickle that is not a weights-only checkpoint is the point of one case; torch warns about its protocol.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", [b"", b"\x00" * 7, os.urandom(4096), "truncated", "pickle"])
def test_a_damaged_state_file_is_one_line(content, prepared, tiny_model, tmp_path, monkeypatch):
    cfg = _cfg(prepared, tiny_model, tmp_path / "runs")
    run_dir = _interrupted_run(cfg, monkeypatch)
    state = run_dir / "state.pt"
    if content == "truncated":
        state.write_bytes(state.read_bytes()[:200])
    elif content == "pickle":
        state.write_bytes(pickle.dumps({"epoch": Exploit()}))
    else:
        state.write_bytes(content)
    with pytest.raises(UserError, match="state.pt is (damaged|not a vptlib resume state)"):
        run(cfg, resume=True, progress=False)
    assert not Path("/tmp/vptlib-pwned").exists()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/vptlib-pwned",))


def test_a_diverged_run_keeps_its_best_epoch(prepared, tiny_model, tmp_path, monkeypatch):
    from vptlib.runs import training as engine

    monkeypatch.setattr(engine, "_train_epoch", diverging_at(engine._train_epoch, 2, {}))
    with pytest.raises(TrainingDiverged, match="weights of epoch 1"):
        run(_cfg(prepared, tiny_model, tmp_path / "runs"), progress=False)
    (run_dir,) = records.run_dirs(tmp_path / "runs" / "default" / "vpt_shallow")
    assert set(load_file(str(run_dir / "trainable.safetensors"))) >= {"head.weight"}


# ------------------------------------------------------------------ the manifest is validated on load
def _copy_data(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest, symlinks=True, ignore=shutil.ignore_patterns("cache", ".vptlib.lock"))
    return dest


def _rewrite_manifest(data: Path, edit) -> None:
    path = data / "manifest.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = edit(df)
    text = df.to_csv(index=False)
    path.unlink()  # a symlink into the set: write a plain file in its place, as a user would
    path.write_text(text)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("outside", "must lie inside"),
        ("absolute", "must lie inside"),
        ("class", "is not one of the data set's"),
        ("test_in_train", "listed twice"),
        ("copied_into_train", "also in the (test|train) split"),
        ("sha", "changed since prepare hashed it"),
        ("no_column", "lacks column"),
        ("empty", "is not a manifest"),
        ("header_only", "lists no images"),
        ("binary", "is not a manifest"),
        ("split", "unknown split"),
    ],
)
def test_a_bad_manifest_names_its_first_bad_row(case, needle, prepared, tmp_path):
    data = _copy_data(prepared, tmp_path / "d")
    path = data / "manifest.csv"
    if case == "outside":
        _rewrite_manifest(data, lambda df: df.assign(path=df.path.where(df.index != 3, "images/../../etc/passwd")))
    elif case == "absolute":
        _rewrite_manifest(data, lambda df: df.assign(path=df.path.where(df.index != 3, "/etc/passwd")))
    elif case == "class":
        _rewrite_manifest(data, lambda df: df.assign(**{"class": df["class"].where(df.index != 3, "cat")}))
    elif case == "split":
        _rewrite_manifest(data, lambda df: df.assign(split=df.split.where(df.index != 3, "extra")))
    elif case == "test_in_train":
        _rewrite_manifest(data, lambda df: pd.concat([df, df[df.split == "test"].head(1).assign(split="train")]))
    elif case == "copied_into_train":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        row = df[df.split == "test"].iloc[0]
        dest = data / "images" / "train" / row["class"] / "copied.jpg"
        shutil.copyfile(data / row.path, dest)
        extra = row.copy()
        extra["path"], extra["split"] = f"images/train/{row['class']}/copied.jpg", "train"
        _rewrite_manifest(data, lambda df: pd.concat([pd.DataFrame([extra]), df]))
    elif case == "sha":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        target = data / df.path.iloc[5]
        img = Image.open(target).convert("RGB")
        target.unlink()
        img.rotate(90).save(target, format="JPEG")
    elif case == "no_column":
        _rewrite_manifest(data, lambda df: df.drop(columns=["sha256"]))
    else:
        path.unlink()
        path.write_bytes(
            {
                "empty": b"",
                "header_only": ",".join(prep_mod.MANIFEST_FIELDS).encode() + b"\n",
                "binary": os.urandom(2048),
            }[case]
        )
    with pytest.raises(UserError, match=needle):
        load_data(data, Preprocess())


# ------------------------------------------------------------------ hostile sizes
def test_prompt_tokens_are_bounded_by_the_sequence(prepared, tiny_model, tmp_path):
    with pytest.raises(UserError, match=r"prompt_tokens must be in \[0, 200\]"):
        run(_cfg(prepared, tiny_model, tmp_path, options={"prompt_tokens": 100_000}), progress=False)
    assert "4x" in _cli("run", "--help").stdout.replace("\n", " ")


def test_extreme_images_are_skipped_with_a_reason(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    Image.new("L", (4000, 100)).save(src / "Training" / "glioma" / "strip.png")
    Image.new("L", (8, 8)).save(src / "Training" / "glioma" / "tiny.png")
    prepare(_opts(src, tmp_path / "out", train_per_class=40))  # every file is inspected
    df = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False).set_index("source")
    assert "aspect ratio" in df.loc["Training/glioma/strip.png", "note"]
    assert "too small" in df.loc["Training/glioma/tiny.png", "note"]
    assert (df.loc[["Training/glioma/strip.png", "Training/glioma/tiny.png"], "split"] == "skipped").all()


# ------------------------------------------------------------------ one line, exit 2
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["data", "prepare", "--source", "S", "--out", "O", "--seed", "-1"], "seed -1 is out of range"),
        (["data", "prepare", "--source", "S", "--out", "O", "--seed", "1e20"], "invalid seed '1e20'"),
        (["run", "--method", "linear", "--data", "D", "--seed", "100000000000000000000"], "out of range"),
        (["data", "phantoms", "--out", "P", "--per-class", "1", "--size", "100000000"], "size in [64, 4096]"),
        (["data", "phantoms", "--out", "P", "--per-class", "1", "--size", "1e8"], "invalid int value"),
        (["run", "--method", "linear", "--data", "D", "--precision", "fp8"], "invalid choice: 'fp8'"),
    ],
)
def test_bad_numbers_are_one_line(args, said, tmp_path):
    _one_line_exit_2(_cli(*args, cwd=tmp_path), said)
    assert not (tmp_path / "P").exists() and not (tmp_path / "O").exists()


def test_out_that_is_a_file_is_one_line(phantom_source, tmp_path):
    (tmp_path / "O").write_text("a file")
    _one_line_exit_2(
        _cli("data", "prepare", "--source", str(phantom_source), "--out", str(tmp_path / "O")), "not a folder"
    )


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_is_one_line(err, phantom_source, tmp_path, monkeypatch, capsys):
    def fail(*a, **k):
        raise OSError(err, os.strerror(err), str(tmp_path / "O" / "x"))

    monkeypatch.setattr(shutil, "copyfile", fail)
    code = cli.main(
        [
            "data",
            "prepare",
            "--source",
            str(phantom_source),
            "--out",
            str(tmp_path / "O"),
            "--train-per-class",
            "5",
            "--test-per-class",
            "5",
        ]
    )
    err_text = capsys.readouterr().err
    assert code == 2 and os.strerror(err) in err_text and "Traceback" not in err_text
    assert not (tmp_path / "O" / "manifest.csv").exists()


def test_model_errors_are_one_line(tiny_model, prepared, tmp_path):
    bad = tmp_path / "truncated"
    shutil.copytree(tiny_model, bad)
    (bad / "model.safetensors").write_bytes((bad / "model.safetensors").read_bytes()[:1000])
    empty = tmp_path / "empty"
    shutil.copytree(tiny_model, empty)
    (empty / "model.safetensors").write_bytes(b"")
    wide = tmp_path / "wide"
    shutil.copytree(tiny_model, wide)
    cfg = json.loads((wide / "config.json").read_text())
    cfg["vision_config"]["hidden_size"] = 96
    (wide / "config.json").write_text(json.dumps(cfg))
    for model in (bad, empty, wide):
        _one_line_exit_2(
            _cli(
                "run",
                "--method",
                "linear",
                "--data",
                str(prepared),
                "--model",
                str(model),
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "runs"),
                "--quiet",
            ),
            str(model),
        )


def test_convert_refuses_a_malicious_pickle(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    with open(src / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Exploit()}, f)
    done = _cli("model", "convert", "--src", str(src), "--out", str(tmp_path / "out"))
    _one_line_exit_2(done, "refusing to load it")
    assert "weights_only=False" not in done.stderr
    assert not Path("/tmp/vptlib-pwned").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("profile: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("profile: p\nmodel: m\ndata: d\nseeds: 3\n", "seeds must be a list"),
        ("profile: p\nmodel: m\ndata: d\nbatch_size: many\n", "batch_size must be a int"),
        ("profile: p\nmodel: m\ndata: d\ncolour: red\n", "unknown key(s) colour"),
    ],
)
def test_a_bad_profile_is_one_line(text, needle, tmp_path):
    (tmp_path / "p.yaml").write_text(text)
    _one_line_exit_2(_cli("sweep", "--profile", str(tmp_path / "p.yaml"), "--name", "x"), needle)


# ------------------------------------------------------------------ writes are atomic
def test_a_killed_model_save_leaves_no_weights(tmp_path, monkeypatch):
    from transformers import CLIPModel

    from vptlib.models.offline import write_tiny_clip

    real = CLIPModel.save_pretrained

    def save_then_die(self, path, **kw):
        real(self, path, **kw)
        raise KeyboardInterrupt  # killed after the weights, before the tokenizer

    monkeypatch.setattr(CLIPModel, "save_pretrained", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_tiny_clip(tmp_path / "m")
    assert not (tmp_path / "m").exists()  # `make` sees no model.safetensors and rebuilds
    monkeypatch.setattr(CLIPModel, "save_pretrained", real)
    write_tiny_clip(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").stat().st_mode & 0o044 == 0o044  # group/other readable
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]
    user = tmp_path / "users"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        write_tiny_clip(user)
    assert (user / "keep.txt").read_text() == "mine"


def test_orphaned_temporaries_are_cleaned_but_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    here = atomic.writer_tag().rsplit("~", 1)[0]
    orphan = tmp_path / f".x.json.{here}~{dead}.abcd.tmp"
    live = tmp_path / f".x.json.{here}~{os.getppid()}.abcd.tmp"
    # The same dead pid on another host, or in another container of this host: not ours to judge.
    other_host = tmp_path / f".x.json.elsewhere~{here.split('~')[1]}~{dead}.abcd.tmp"
    other_ns = tmp_path / f".x.json.{here.split('~')[0]}~1~{dead}.abcd.tmp"
    for f in (orphan, live, other_host, other_ns):
        f.write_text("half")
    atomic.write_json(tmp_path / "x.json", {"a": 1})
    assert not orphan.exists() and live.exists() and other_host.exists() and other_ns.exists()
    mode = (tmp_path / "x.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-Urpf", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="no unprivileged user and PID namespaces here")
def test_writers_in_two_pid_namespaces_keep_each_others_temporaries(tmp_path):
    """Two array jobs on a shared folder: each sees the other's pid as dead in its own PID
    namespace (both run as pid 1 or 2 there). The later write must not delete the earlier
    writer's live temporary (before: FileNotFoundError in the first writer)."""
    target = tmp_path / "cache.bin"
    slow = (
        "import time, pathlib, sys; from vptlib import atomic\n"
        "def w(p):\n    p.write_bytes(b'first'); pathlib.Path(sys.argv[2]).touch(); time.sleep(4)\n"
        "atomic.atomic_write(sys.argv[1], w)\n"
    )
    fast = "import sys; from vptlib import atomic; atomic.write_bytes(sys.argv[1], b'second')"
    started = tmp_path / "started"
    # The first writer runs as pid 2 under a shell (pid 1) of its namespace, the second as pid 1
    # of another: in the second's namespace pid 2 does not exist.
    script = '"$0" -c "$1" "$2" "$3"; exit $?'
    first = subprocess.Popen(["unshare", "-Urpf", "sh", "-c", script, sys.executable, slow, str(target), str(started)])
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(["unshare", "-Urpf", sys.executable, "-c", fast, str(target)], timeout=60)
    assert second.returncode == 0
    assert first.wait(timeout=60) == 0  # its temporary was still there to rename
    assert target.read_bytes() == b"first"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_under_runs_or_the_cache_is_one_line(err, prepared, tiny_model, tmp_path, monkeypatch, capsys):
    """Every record and cache file goes through atomic_write: a failing disk is one line, exit 2."""

    def fail(path, write):
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr(atomic, "atomic_write", fail)
    code = cli.main(
        [
            "run",
            "--method",
            "linear",
            "--data",
            str(prepared),
            "--model",
            str(tiny_model),
            "--out",
            str(tmp_path / "runs"),
            "--quiet",
            "--precision",
            "fp32",
        ]
    )
    err_text = capsys.readouterr().err
    assert code == 2 and os.strerror(err) in err_text and "Traceback" not in err_text
    assert len([x for x in err_text.splitlines() if x.startswith("vptlib: error:")]) == 1


@pytest.mark.skipif(not namespaces_work(), reason="no unprivileged user and mount namespaces here")
def test_a_real_full_disk_is_one_line_naming_what_the_user_chose(prepared, phantom_source, tiny_model, tmp_path):
    """A tmpfs that fills: the pixel cache (safetensors: a SafetensorError, not an OSError),
    a run's records and a prepared set each fail with one line naming the path, exit 2."""
    data = _copy_data(prepared, tmp_path / "data")
    shutil.rmtree(data / "cache", ignore_errors=True)
    py = [sys.executable, "-m", "vptlib"]
    run_args = ["run", "--method", "linear", "--data", str(data), "--model", str(tiny_model), "--device", "cpu"]
    done = on_a_full_disk(data / "cache", [*py, *run_args, "--out", str(tmp_path / "runs"), "--quiet"])
    _one_line_exit_2(done, f"cannot write {data / 'cache'}/pixels-", "the disk is full")
    done = on_a_full_disk(
        tmp_path / "full", [*py, *run_args, "--out", str(tmp_path / "full" / "runs"), "--quiet"], size="8k"
    )
    _one_line_exit_2(done, f"cannot write {tmp_path / 'full' / 'runs'}", "the disk is full")
    prep = ["data", "prepare", "--source", str(phantom_source), "--out", str(tmp_path / "full2" / "prep")]
    done = on_a_full_disk(tmp_path / "full2", [*py, *prep, "--train-per-class", "30", "--test-per-class", "20"])
    _one_line_exit_2(done, f"cannot write {tmp_path / 'full2' / 'prep'}", "the disk is full")
