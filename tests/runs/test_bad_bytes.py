"""Bytes, not assumptions: file names that are not UTF-8, dangling links, unavailable
devices, damaged configs and weights each give one line naming the file and what to do."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import tiny_config

from vptlib.cli import app as cli
from vptlib.data.dataset import Preprocess, load_data
from vptlib.data.prepare import PrepareOptions, prepare
from vptlib.errors import UserError
from vptlib.models.backbone import convert_to_safetensors, load_clip
from vptlib.runs import records
from vptlib.runs.engine import run
from vptlib.runs.predict import predict

ROOT = Path(__file__).resolve().parents[2]
LATIN1 = b"caf\xe9_scan.jpg"  # as an old zip names it: not valid UTF-8


def _odd_source(phantom_source: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    folder = os.fsencode(src / "Training" / "glioma")
    first = sorted(os.listdir(folder))[0]
    os.rename(folder + b"/" + first, folder + b"/" + LATIN1)
    os.symlink(b"/nonexistent/moved.jpg", folder + b"/dangling.jpg")
    return src


def test_prepare_lists_an_undecodable_name_and_a_dangling_link_as_skipped(phantom_source, tmp_path):
    out = tmp_path / "out"
    prepare(PrepareOptions(_odd_source(phantom_source, tmp_path), out, train_per_class=38, test_per_class=5))
    text = (out / "manifest.csv").read_text(encoding="utf-8")  # still UTF-8 throughout
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    odd = df[df.source.str.contains("caf")].iloc[0]
    assert odd.source == "Training/glioma/caf\\xe9_scan.jpg" and odd.split == "skipped"
    assert "not valid UTF-8" in odd.note
    link = df[df.source.str.endswith("dangling.jpg")].iloc[0]
    assert link.split == "skipped" and "broken link to /nonexistent/moved.jpg" in link.note


def test_data_prepared_with_links_whose_source_moved_names_the_file(phantom_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(phantom_source, src)
    out = tmp_path / "out"
    prepare(PrepareOptions(src, out, train_per_class=5, test_per_class=5, link=True))
    src.rename(tmp_path / "moved")
    with pytest.raises(UserError, match=r"row 2 .*a link to .*which is gone .*move the source back, or re-run"):
        load_data(out, Preprocess())


@pytest.fixture(scope="module")
def a_run(prepared, tiny_model, tmp_path_factory) -> Path:
    return run(tiny_config(prepared, tiny_model, tmp_path_factory.mktemp("runs"), epochs=1), progress=False).run_dir


def test_predict_reports_undecodable_names_and_dangling_links_and_writes_utf8(a_run, prepared, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = next((prepared / "images" / "test").rglob("*.jpg"))
    shutil.copyfile(image, os.fsencode(folder) + b"/" + LATIN1)
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = os.fsencode(tmp_path) + b"/out-\xe9.csv"
    assert cli.main(["predict", str(a_run), str(folder), "--out", os.fsdecode(out), "--quiet"]) == 0
    table = Path(os.fsdecode(out)).read_text(encoding="utf-8")
    assert "caf\\xe9_scan.jpg" in table and "broken link to" in table
    shown = predict(a_run, [folder])
    assert shown.loc[shown.path.str.contains("caf"), "error"].fillna("").eq("").all()  # it was classified


def _run_copy(a_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / a_run.name
    shutil.copytree(a_run, copy)
    return copy


def test_a_damaged_or_mismatched_checkpoint_is_one_line(a_run, prepared, tmp_path, capsys):
    image = next((prepared / "images" / "test").rglob("*.jpg"))
    truncated = _run_copy(a_run, tmp_path / "t")
    weights = truncated / records.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match=r"trainable.safetensors is damaged .*delete .* and rerun"):
        predict(truncated, [image])
    refit = _run_copy(a_run, tmp_path / "r")
    cfg = json.loads((refit / records.CONFIG).read_text())
    cfg["method_options"]["prompt_tokens"] = 7  # the config no longer fits the weights
    (refit / records.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="does not fit .*config.json"):
        predict(refit, [image])
    assert cli.main(["predict", str(truncated), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("vptlib: error:") == 1 and "Traceback" not in err


def test_weights_swapped_between_runs_are_refused(a_run, prepared, tiny_model, tmp_path):
    other = run(tiny_config(prepared, tiny_model, tmp_path / "o", epochs=1, seed=1), progress=False).run_dir
    swapped = _run_copy(a_run, tmp_path / "s")
    shutil.copyfile(other / records.WEIGHTS, swapped / records.WEIGHTS)  # same method, same shapes
    image = next((prepared / "images" / "test").rglob("*.jpg"))
    with pytest.raises(UserError, match="is not the file this run wrote"):
        predict(swapped, [image])
    assert len(predict(_run_copy(a_run, tmp_path / "k"), [image])) == 1  # its own file: fine


def test_an_unavailable_device_is_one_line_whatever_the_machine(a_run, prepared, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # forced: the same on a GPU box
    image = next((prepared / "images" / "test").rglob("*.jpg"))
    assert cli.main(["predict", str(a_run), str(image), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA GPU" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "tower, key, value, why",
    [
        ("vision_config", "num_attention_heads", 0, "whole number >= 1"),
        ("vision_config", "hidden_size", "64", "whole number >= 1"),
        ("text_config", "num_hidden_layers", -1, "whole number >= 1"),
        ("vision_config", "num_attention_heads", 3, "not divisible"),
        ("vision_config", "patch_size", 1.5, "whole number >= 1"),
    ],
)
def test_a_damaged_model_config_names_the_field(tiny_model, tmp_path, tower, key, value, why):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg[tower][key] = value
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=f"{tower}.*{why}"):
        load_clip(model)
    # model convert reads the same config: the same line, nothing written
    from safetensors.torch import load_file

    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with pytest.raises(UserError, match=f"{tower}.*{why}"):
        convert_to_safetensors(model, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()
    if value != 0:
        return  # the command line once (~7 s): one line, exit 2
    done = subprocess.run(
        [sys.executable, "-m", "vptlib", "model", "convert", "--src", str(model), "--out", str(tmp_path / "c2")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and why in done.stderr, done.stderr


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda c: {**c, "method": "vpt_renamed"}, "names the method 'vpt_renamed', which this version does not have"),
        (lambda c: {**c, "method_options": {**c["method_options"], "dropped": 1}}, "option\\(s\\) dropped that this"),
        (lambda c: {k: v for k, v in c.items() if k != "preprocess"}, "has no preprocess"),
        (lambda c: {**c, "preprocess": {**c["preprocess"], "gamma": 2}}, "preprocess record with other keys"),
        (lambda c: "not json {", "is not a JSON object"),
        (lambda c: [1, 2], "is not a JSON object"),
    ],
)
def test_a_run_record_from_another_version_is_one_line_naming_it(a_run, prepared, tmp_path, capsys, edit, why):
    """predict and the report read a run through one checked loader: the file and the version
    that wrote it, exit 2, no traceback."""
    image = next((prepared / "images" / "test").rglob("*.jpg"))
    old = _run_copy(a_run, tmp_path / "old")
    cfg = json.loads((old / records.CONFIG).read_text())
    cfg["versions"]["vptlib"] = "0.0.9"
    edited = edit(cfg)
    (old / records.CONFIG).write_text(edited if isinstance(edited, str) else json.dumps(edited))
    assert cli.main(["predict", str(old), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("vptlib: error:") == 1 and "Traceback" not in err
    assert f"{old / records.CONFIG}" in err
    assert len(__import__("re").findall(why, err)) == 1, err
    if not isinstance(edited, str) and isinstance(edited, dict):
        assert "written by vptlib 0.0.9" in err
    with pytest.raises(UserError, match=why):
        records.read_run(old)


def test_a_run_that_fails_at_model_load_leaves_no_folder(prepared, tiny_model, tmp_path, capsys):
    """Before: an empty run folder holding only its lock file, for every failed attempt."""
    broken = tmp_path / "model"
    shutil.copytree(tiny_model, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["vision_config"]["hidden_size"] = "wide"
    (broken / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "runs"
    args = ["run", "--method", "linear", "--data", str(prepared), "--model", str(broken), "--out", str(out), "--quiet"]
    assert cli.main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not [p for p in out.rglob("*") if p.is_dir() and records.run_order(p)[0]], sorted(out.rglob("*"))
