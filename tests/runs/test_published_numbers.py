"""Identity checks wherever a result is reused or shown: a published number is one the
records support, a prediction uses the weights its run trained from, a cache is used
only when it is verified, and a page is re-made when its model changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_config
from safetensors.torch import save_file

from vptlib import tensorfile
from vptlib.data.dataset import Preprocess, load_data
from vptlib.errors import UserError
from vptlib.models.offline import write_tiny_clip
from vptlib.report import results_table
from vptlib.runs import records
from vptlib.runs.engine import run, run_seeds
from vptlib.runs.predict import predict
from vptlib.study import book


@pytest.fixture(scope="module")
def finished(prepared, tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    model = out / "model"
    shutil.copytree(tiny_model, model)
    run_seeds(tiny_config(prepared, model, out, epochs=1, profile="p"), [0], progress=False)
    return out


def _edit(test: dict, what: str) -> None:
    if what == "accuracy":
        test["accuracy"] = 0.99
    elif what == "macro_f1":
        test["macro_f1"] += 0.01
    elif what == "confusion_matrix":
        test["confusion_matrix"][0][0] += 1
    else:
        del test["accuracy"]


@pytest.mark.parametrize("what", ["accuracy", "macro_f1", "confusion_matrix", "removed accuracy"])
def test_an_edited_metric_is_refused_not_published(finished, tmp_path, what):
    from vptlib.report.experiment import plot_confusion

    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    assert len(results_table(runs, "p")) == 1  # the records agree: shown
    (run_dir,) = [d for d in records.run_dirs(runs / "p" / "vpt_shallow")]
    metrics = json.loads((run_dir / records.METRICS).read_text())
    _edit(metrics["test"], what)
    (run_dir / records.METRICS).write_text(json.dumps(metrics))
    key = what.split()[-1]
    with pytest.raises(UserError, match=f"metrics.json gives test {key} .* but its predictions.csv"):
        results_table(runs, "p")
    with pytest.raises(UserError, match="the record was altered"):
        plot_confusion(run_dir)  # the experiment page reads the same verified record


def test_a_prediction_refuses_a_rebuilt_model_folder(finished, prepared, tiny_model, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    (run_dir,) = [d for d in records.run_dirs(runs / "p" / "vpt_shallow")]
    cfg = json.loads((run_dir / records.CONFIG).read_text())
    image = next((prepared / "images" / "test").rglob("*.jpg"))
    assert predict(run_dir, [image]).error.fillna("").eq("").all()
    model = Path(cfg["model"])
    saved = tmp_path / "original"
    shutil.copytree(model, saved)
    try:
        shutil.rmtree(model)
        write_tiny_clip(model, seed=5)  # the same folder, other weights
        with pytest.raises(UserError, match="is not the model .* was trained from"):
            predict(run_dir, [image])
        assert len(predict(run_dir, [image], model=str(saved))) == 1  # the original weights, moved: fine
    finally:
        shutil.rmtree(model)
        shutil.copytree(saved, model)


def _cache(prepared: Path) -> Path:
    (cache,) = (prepared / "cache").glob("pixels-*.safetensors")
    return cache


@pytest.mark.parametrize("damage", ["other pixels", "truncated", "no header", "header copied onto other pixels"])
def test_a_pixel_cache_is_used_only_when_verified(prepared, tmp_path, damage, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared, data, symlinks=True)
    shutil.rmtree(data / "cache", ignore_errors=True)
    prep = Preprocess()
    truth = load_data(data, prep)
    cache = _cache(data)
    with torch.no_grad():
        pixels = tensorfile.read_cache(cache, {})["pixels"]
    other = pixels.flip(-1).contiguous()
    meta = json.loads(cache.read_bytes()[8 : 8 + int.from_bytes(cache.read_bytes()[:8], "little")])["__metadata__"]
    if damage == "other pixels":
        save_file({"pixels": other}, str(cache), metadata=meta)  # old header, its digest no longer fits
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:1000])
    elif damage == "no header":
        save_file({"pixels": other}, str(cache))  # as an older vptlib wrote it, or a foreign file
    else:  # every field right, digest recomputed: only decoding a few images again tells
        identity = {k: v for k, v in meta.items() if k != tensorfile.DIGEST}
        tensorfile.write_cache(cache, {"pixels": other}, identity)
    again = load_data(data, prep)
    assert torch.equal(again.test.pixels, truth.test.pixels) and torch.equal(again.train.pixels, truth.train.pixels)
    assert "does not match the verified images" in capsys.readouterr().out
    assert torch.equal(tensorfile.read_cache(cache, {})["pixels"], pixels)  # and the cache is healed


def test_a_local_model_folder_is_one_identity_however_it_is_written(prepared, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_model.parent)
    a = tiny_config(prepared, tiny_model.name, tmp_path, epochs=1)
    b = tiny_config(prepared, f"./{tiny_model.name}", tmp_path, epochs=1)
    c = tiny_config(prepared, str(tiny_model), tmp_path, epochs=1)
    assert a.identity() == b.identity() == c.identity()
    first = run(a, progress=False)
    assert run(b, progress=False, reuse=True).run_dir == first.run_dir


def test_the_pages_inputs_stamp_changes_with_the_model_only(tiny_model, tmp_path, monkeypatch):
    profile = tmp_path / "p.yaml"
    text = (book.REPO / "profiles" / "smoke.yaml").read_text()
    text = text.replace("models/tiny-clip-b", str(tiny_model)).replace("models/tiny-clip", str(tiny_model))
    profile.write_text(text.replace("data: data/smoke", f"data: {tmp_path / 'data'}"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("")
    stamp = tmp_path / "inputs.json"
    book.preflight(profile, stamp=stamp)
    first, mtime = stamp.read_text(), stamp.stat().st_mtime_ns
    book.preflight(profile, stamp=stamp)
    assert stamp.stat().st_mtime_ns == mtime  # unchanged inputs: make re-executes nothing
    other = tmp_path / "other"
    write_tiny_clip(other, seed=3)
    book.preflight(profile, model=str(other), stamp=stamp)
    assert stamp.read_text() != first  # MODEL=<another>: the training pages are out of date
    book.preflight(profile, stamp=stamp)
    assert stamp.read_text() == first
    monkeypatch.setenv("VPTLIB_BACKBONES", f"tiny-b={other}")  # BACKBONES=: the variants page is out of date
    book.preflight(profile, stamp=stamp)
    assert json.loads(stamp.read_text())["backbones"]["tiny-b"] != json.loads(first)["backbones"]["tiny-b"]
    makefile = (book.REPO / "Makefile").read_text()
    for page in ("$(GEN)/experiments/%.ipynb:", "$(GEN)/curves.ipynb:", "$(GEN)/variants.ipynb:"):
        rule = next(line for line in makefile.splitlines() if line.startswith(page))
        assert "$(INPUTS)" in rule, rule
    assert "--stamp $(INPUTS)" in makefile
