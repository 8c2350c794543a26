"""Failures heal on rerun: a full disk, a kill or a divergence leaves the old state or a
clearly marked failure that the next run cleans or skips; one bad point never stops the
others; every test look is counted exactly once, also across kills."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import diverging_at, job_that_dies_on, tiny_config
from tqdm import tqdm

from vptlib import atomic, report
from vptlib.data import sets
from vptlib.data.dataset import Preprocess, load_data
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.errors import UserError
from vptlib.runs import ledger, records
from vptlib.runs.engine import run
from vptlib.study import sweep


def _opts(src, out, **kw) -> PrepareOptions:
    return PrepareOptions(src, out, **{"train_per_class": 10, "test_per_class": 5, "seed": 0, **kw})


def test_a_full_disk_during_prepare_leaves_the_old_set_and_the_retry_works(phantom_source, tmp_path, monkeypatch):
    out = tmp_path / "O"
    prepare(_opts(phantom_source, out))
    old = (out / "manifest.csv").read_bytes()
    real, calls = shutil.copyfile, {"n": 0}

    def disk_fills(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", disk_fills)
    with pytest.raises(UserError, match=f"cannot write {out}: the disk is full"):  # one line naming --out
        prepare(_opts(phantom_source, out, seed=1))
    assert (out / "manifest.csv").read_bytes() == old  # the live set is untouched
    assert [p.name for p in (out / sets.SETS).iterdir()] == [os.readlink(out / sets.CURRENT).split("/")[1]]
    monkeypatch.setattr(shutil, "copyfile", real)
    prepare(_opts(phantom_source, out, seed=1))  # the disk has room again: the retry just works
    assert (out / "manifest.csv").read_bytes() != old
    load_data(out, Preprocess())


def test_a_killed_prepares_half_set_is_removed_by_the_next(phantom_source, tmp_path):
    out = tmp_path / "O"
    prepare(_opts(phantom_source, out))
    dead = 2**22 + 12345  # above any pid_max default: no such process
    for name in (f"20200101-000000-{dead}-000000001.partial", f"20200101-000000-{dead}-000000002"):
        stale = out / sets.SETS / name
        (stale / "images").mkdir(parents=True)
        (stale / sets.SET_MARKER).write_text(json.dumps({"tool": "vptlib data prepare"}))
        (stale / "images" / "big.bin").write_bytes(b"x" * 1000)
    prepare(_opts(phantom_source, out, seed=1))
    assert len(list((out / sets.SETS).iterdir())) == 1


def test_a_killed_writers_scratch_folder_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "tiny-clip"
    dead = 2**22 + 12345
    here = atomic.writer_tag().rsplit("~", 1)[0]  # this host and PID namespace
    left = tmp_path / f".tiny-clip.{here}~{dead}.abcd1234.scratch"  # SIGKILL ran no cleanup
    left.mkdir()
    (left / "phantoms").mkdir()
    with atomic.scratch_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir()
    assert not left.exists() and not tmp.exists()


def test_a_killed_sweep_worker_costs_only_its_own_point(tmp_path):
    points = ["a", "b", "die", "c", "d"]
    rows = [{"point": p} for p in points]
    sweep._pooled(rows, points, 2, None, 1, tqdm(disable=True), job=job_that_dies_on)
    assert [r["error"] for r in rows] == ["", "", sweep.DIED, "", ""]
    assert [r["run_dir"] for r in rows] == ["run-a", "run-b", "", "run-c", "run-d"]


def test_an_interrupted_sweep_still_writes_its_index_with_every_point(prepared, tiny_model, tmp_path, monkeypatch):
    prof = {
        "profile": "s",
        "data": str(prepared),
        "model": str(tiny_model),
        "runs": str(tmp_path),
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 16,
        "hparams": {"linear": {"epochs": 1}},
        "sweeps": {"few": {"methods": ["zero_shot", "linear"], "train_per_class": [2, 4], "seeds": [0]}},
    }
    real, calls = sweep._job, {"n": 0}

    def ctrl_c_on_the_third(cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(sweep, "_job", ctrl_c_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(prof, "few", workers=1, progress=False)
    index = pd.read_csv(tmp_path / "s" / "sweeps" / "few.csv", keep_default_na=False)
    assert len(index) == 4 and (index.error == "").sum() == 2
    assert index.error.str.contains("interrupted").sum() == 2
    page = report.sweep_failures_html(index, "train_per_class")
    assert "2 of 4 points failed" in page and "interrupted" in page


def test_a_failed_sweep_point_is_shown_on_the_curves_page():
    df = pd.DataFrame(
        [
            {"method": "linear", "seed": 0, "train_per_class": 2, "error": "", "test_acc": 0.5},
            {"method": "vpt_deep", "seed": 1, "train_per_class": 8, "error": "TrainingDiverged: loss <inf>"},
        ]
    )
    page = report.sweep_failures_html(df, "train_per_class")
    assert "1 of 2 points failed" in page and "VPT-deep, train_per_class 8, seed 1" in page
    assert "&lt;inf&gt;" in page  # escaped, never raw HTML
    assert report.sweep_failures_html(df.iloc[:1], "train_per_class") == ""
    nb = json.loads((Path(__file__).resolve().parents[2] / "notebooks" / "curves.ipynb").read_text())
    shown = [c for c in nb["cells"] if "sweep_failures_html" in "".join(c["source"])]
    assert len(shown) == 2 and all("remove-cell" not in c["metadata"].get("tags", []) for c in shown)


def test_a_test_look_is_counted_once_across_a_kill_and_a_resume(prepared, tiny_model, tmp_path, monkeypatch):
    cfg = tiny_config(prepared, tiny_model, tmp_path, epochs=1, profile="p")
    real = atomic.write_json

    def killed_at_metrics(path, obj):
        if Path(path).name == records.METRICS:
            raise KeyboardInterrupt("killed after the ledger line, before metrics.json")
        return real(path, obj)

    monkeypatch.setattr(atomic, "write_json", killed_at_metrics)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    monkeypatch.setattr(atomic, "write_json", real)
    root = records.profile_folder(tmp_path, "p")
    assert [e["what"] for e in ledger.read_ledger(root)] == ["reported"]  # the look happened: counted
    done = run(cfg, progress=False, resume=True)
    entries = ledger.read_ledger(root)
    assert [e["what"] for e in entries] == ["reported"] and entries[0]["run_id"] == done.run_dir.name


def test_a_diverged_run_is_reported_again_without_training_again(prepared, tiny_model, tmp_path, monkeypatch):
    from vptlib.errors import TrainingDiverged
    from vptlib.runs import training

    calls = {"n": 0}
    monkeypatch.setattr(training, "_train_epoch", diverging_at(training._train_epoch, 2, calls))
    cfg = tiny_config(prepared, tiny_model, tmp_path, epochs=3)
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        run(cfg, progress=False)
    (run_dir,) = records.run_dirs(tmp_path / "default" / "vpt_shallow")
    assert "loss became nan" in json.loads((run_dir / records.DIVERGED).read_text())["reason"]
    trained = calls["n"]
    # A page or sweep resumes it: the same seeded steps would diverge again, so it fails at once.
    with pytest.raises(TrainingDiverged, match="recorded by an earlier attempt; delete"):
        run(cfg, progress=False, resume=True)
    assert calls["n"] == trained  # no epoch trained again


def test_a_full_disk_while_the_pixel_cache_is_written_leaves_no_cache_and_the_next_load_works(
    prepared, tmp_path, monkeypatch
):
    from vptlib import tensorfile

    data = tmp_path / "data"
    shutil.copytree(prepared, data, symlinks=True)
    shutil.rmtree(data / "cache", ignore_errors=True)
    real = tensorfile.save_file

    def disk_full(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 100)  # part of the file made it
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(tensorfile, "save_file", disk_full)
    with pytest.raises(UserError, match="cannot write .*pixels-.* the disk is full"):  # one line, the file named
        load_data(data, Preprocess())
    assert list((data / "cache").iterdir()) == []  # no half-written cache, no temporary left
    monkeypatch.setattr(tensorfile, "save_file", real)
    first = load_data(data, Preprocess())
    assert torch.equal(load_data(data, Preprocess()).test.pixels, first.test.pixels)
