"""The same results on every machine: precision decisions with each branch forced, runs
that reload into predictors reproducing their records, `vptlib predict`, run order, and
`make browser` without root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from vptlib.errors import UserError
from vptlib.runs import devices, records
from vptlib.runs.engine import RunConfig, run
from vptlib.runs.predict import load_predictor

ROOT = Path(__file__).resolve().parents[2]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _cfg(prepared, model, out, **kw) -> RunConfig:
    return tiny_config(prepared, model, out, **{"method": "vpt_deep", **kw})


# ------------------------------------------------------------------ precision decisions
@pytest.mark.parametrize(
    ("capability", "expected"),
    [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 0), "fp32")],
    ids=["H100", "A100", "T4", "V100", "P100"],
)
def test_auto_on_gpus_follows_compute_capability(capability, expected, monkeypatch):
    monkeypatch.delenv(devices.FAST_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # T4/V100 report bf16 "supported" (emulated): the decision must not believe it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.resolve_precision("auto", CUDA) == expected
    assert devices.resolve_precision("fp32", CUDA) == "fp32"  # an explicit choice is kept


@pytest.mark.parametrize("flags", [(True, False), (False, True), (False, False)], ids=["avx512bf16", "amx", "none"])
def test_auto_on_cpus_follows_the_flags(flags, monkeypatch):
    monkeypatch.delenv(devices.FAST_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: flags[0])
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: flags[1])
    assert devices.resolve_precision("auto", CPU) == ("bf16" if any(flags) else "fp32")


def test_fast_bf16_override_and_bad_values(monkeypatch):
    monkeypatch.setenv(devices.FAST_BF16_ENV, "1")
    assert devices.resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setenv(devices.FAST_BF16_ENV, "0")
    assert devices.resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setenv(devices.FAST_BF16_ENV, "yes")
    with pytest.raises(UserError, match="VPTLIB_FAST_BF16"):
        devices.resolve_precision("auto", CPU)
    with pytest.raises(UserError, match="--precision"):
        devices.resolve_precision("fp8", CPU)


def test_scaler_only_for_fp16():
    assert devices.grad_scaler(CPU, "fp16").is_enabled()
    assert not devices.grad_scaler(CPU, "bf16").is_enabled()
    assert not devices.grad_scaler(CPU, "fp32").is_enabled()


@pytest.mark.parametrize("fast", [True, False], ids=["bf16-capable", "not-bf16-capable"])
def test_engine_auto_branch_is_forced(fast, prepared, tiny_model, tmp_path, monkeypatch):
    """Both of auto's CPU branches run on every machine, whatever this CPU has."""
    monkeypatch.setattr(devices, "bf16_supported", lambda device: fast)
    res = run(_cfg(prepared, tiny_model, tmp_path, method="vpt_shallow", epochs=1, precision="auto"), progress=False)
    want = "bf16" if fast else "fp32"
    assert res.metrics["precision"] == want
    assert json.loads((res.run_dir / "config.json").read_text())["precision"] == want


def test_fp16_trains_with_a_scaler_and_resumes(prepared, tiny_model, tmp_path, monkeypatch):
    """fp16 (what auto picks on a T4/V100) runs on the CPU too, and its scaler state is checkpointed."""
    saved = []
    real = records.save_state
    monkeypatch.setattr(records, "save_state", lambda path, state: (saved.append(state), real(path, state)))
    res = run(
        _cfg(prepared, tiny_model, tmp_path, method="vpt_shallow", epochs=2, precision="fp16", lr=0.01), progress=False
    )
    assert res.metrics["precision"] == "fp16"
    assert np.isfinite(res.history.train_loss).all()
    assert saved and saved[-1]["scaler"]["scale"] > 0  # the scaler's state is part of the resume state


# ------------------------------------------------------------------ a run predicts as it recorded
def _recorded_test_rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions.csv").query("split == 'test'").reset_index(drop=True)


def _assert_same_predictions(ours: pd.DataFrame, saved: pd.DataFrame, classes) -> None:
    ours = ours.set_index(ours.path.map(lambda p: Path(p).as_posix().split("/images/")[-1])).sort_index()
    saved = saved.set_index(saved.path.str.replace("images/", "", n=1)).sort_index()
    assert list(ours.index) == list(saved.index)
    assert list(ours.pred) == list(saved.pred)
    cols = [f"prob_{c}" for c in classes]
    np.testing.assert_allclose(ours[cols].to_numpy(float), saved[cols].to_numpy(float), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("method", "precision"),
    [
        ("vpt_deep", "fp32"),
        ("vpt_deep", "bf16"),
        ("linear", "bf16"),
        ("wise_ft", "bf16"),
        ("tip_adapter_f", "fp32"),  # its cache has one key per training image: sized by the data
        ("coop", "bf16"),
        ("clap", "fp32"),
    ],
)
def test_reloaded_run_reproduces_its_predictions(method, precision, prepared, tiny_model, tmp_path):
    kw = {"lr": 1e-4, "epochs": 1} if method == "wise_ft" else {"epochs": 2} if method in ("clap", "coop") else {}
    res = run(_cfg(prepared, tiny_model, tmp_path, method=method, precision=precision, **kw), progress=False)
    predictor = load_predictor(res.run_dir)
    assert predictor.precision == precision and predictor.classes == tuple(res.metrics["test"]["per_class"])
    saved = _recorded_test_rows(res.run_dir)
    table = predictor.predict_files([prepared / p for p in saved.path])
    _assert_same_predictions(table, saved, predictor.classes)
    if precision == "bf16":  # the recorded precision matters: fp32 gives other probabilities
        other = load_predictor(res.run_dir, precision="fp32").predict_files([prepared / p for p in saved.path])
        assert np.abs(other.filter(like="prob_").to_numpy() - table.filter(like="prob_").to_numpy()).max() > 1e-6


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vptlib", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_predict_cli_on_a_bf16_runs_test_folder(prepared, tiny_model, tmp_path):
    res = run(_cfg(prepared, tiny_model, tmp_path, precision="bf16"), progress=False)
    out = tmp_path / "preds.csv"
    done = _cli("predict", str(res.run_dir), str(prepared / "images" / "test"), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["path", "pred", *[f"prob_{c}" for c in res.metrics["test"]["per_class"]], "error"]
    _assert_same_predictions(table, _recorded_test_rows(res.run_dir), tuple(res.metrics["test"]["per_class"]))
    assert "prob_glioma" in done.stdout and f"wrote {out}" in done.stdout


def test_predict_lists_bad_files_and_converts_odd_formats(prepared, tiny_model, tmp_path):
    res = run(_cfg(prepared, tiny_model, tmp_path, method="linear", epochs=1), progress=False)
    src = Image.open(next(p for p in (prepared / "images" / "test").rglob("*") if p.is_file())).convert("RGB")
    folder = tmp_path / "new"
    folder.mkdir()
    src.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 64).save(folder / "sixteen.png")
    src.convert("P").save(folder / "palette.png")
    (folder / "truncated.png").write_bytes((folder / "palette.png").read_bytes()[:60])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    done = _cli(
        "predict",
        str(res.run_dir),
        str(folder),
        str(tmp_path / "missing.png"),
        "--quiet",
        "--out",
        str(tmp_path / "p.csv"),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("path")
    names = {Path(p).name: row for p, row in table.iterrows()}
    for ok in ("cmyk.jpg", "sixteen.png", "palette.png"):
        assert names[ok].error == "" and names[ok].pred in res.metrics["test"]["per_class"], ok
    for bad, reason in [
        ("truncated.png", "corrupt"),
        ("empty.jpg", "empty"),
        ("notes.txt", "extension"),
        ("missing.png", "no such"),
    ]:
        assert reason in names[bad].error and names[bad].pred == "", bad
        assert f"not classified: {table.index[list(names).index(bad)]}" in done.stderr
    # Nothing readable at all: one line, exit 2.
    done = _cli("predict", str(res.run_dir), str(folder / "empty.jpg"), "--quiet")
    assert done.returncode == 2 and "none of the 1 inputs" in done.stderr and "Traceback" not in done.stderr
    done = _cli("predict", str(tmp_path), str(folder), "--quiet")
    assert done.returncode == 2 and "not a finished run" in done.stderr
    # The base model moved: --model finds it, but only if it holds the recorded weights.
    from vptlib.models.offline import write_tiny_clip

    moved = tmp_path / "moved"
    shutil.copytree(tiny_model, moved)
    done = _cli("predict", str(res.run_dir), str(folder / "cmyk.jpg"), "--model", str(moved), "--quiet")
    assert done.returncode == 0, done.stderr
    other = write_tiny_clip(tmp_path / "other", seed=5)
    done = _cli("predict", str(res.run_dir), str(folder / "cmyk.jpg"), "--model", str(other), "--quiet")
    assert done.returncode == 2 and "is not the model" in done.stderr


# ------------------------------------------------------------------ run order
class _FrozenClock(datetime):
    now_value = datetime(2026, 1, 1, 12, 0, 0)

    @classmethod
    def now(cls, tz=None):
        return cls.now_value.replace(tzinfo=tz)


def test_run_ids_sort_by_creation_within_one_second_and_across_clock_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "datetime", _FrozenClock)
    # Same microsecond, hashes in falling order: creation order must still win.
    made = [records.new_run_dir(tmp_path, h) for h in ("ffffffff", "80000000", "00000000")]
    _FrozenClock.now_value = datetime(2025, 12, 31, 23, 59, 59)  # the clock steps back
    made.append(records.new_run_dir(tmp_path, "aaaaaaaa"))
    assert records.run_dirs(tmp_path) == made
    assert sorted(p.name for p in made) == [p.name for p in made]


def test_latest_run_is_the_newest_even_in_the_same_second(tmp_path, monkeypatch):
    from vptlib import report

    monkeypatch.setattr(records, "datetime", _FrozenClock)
    root = tmp_path / "p" / "linear"
    for h in ("ffffffff", "00000000"):
        d = records.new_run_dir(root, h)
        (d / records.METRICS).write_text("{}")
    assert report.latest_run(tmp_path, "p", "linear").name.endswith("-00000000")
    # Ids of earlier versions (to the second, with a tie counter) still sort by creation.
    for name in ("20250101-000000-ffffffff", "20250101-000000-00000000-1"):
        (root / name).mkdir()
        (root / name / records.METRICS).write_text("{}")
    order = [p.name for p in records.run_dirs(root)]
    assert order[:2] == ["20250101-000000-ffffffff", "20250101-000000-00000000-1"]


# ------------------------------------------------------------------ make test without root
def _fake_bin(tmp_path: Path, uid: str) -> Path:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in [("id", f"echo {uid}"), ("sudo", "exit 1"), ("apt-get", "echo apt-get ran; exit 1")]:
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    return bin_


@pytest.mark.parametrize("ci", ["", "true"])
def test_make_browser_without_root(ci, tmp_path):
    env = {**os.environ, "PATH": f"{_fake_bin(tmp_path, '1000')}:{os.environ['PATH']}", "CI": ci}
    done = subprocess.run(
        ["make", "--no-print-directory", "browser", "CHROMIUM=no-such-chromium"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "apt-get ran" not in done.stdout
    if ci:
        assert done.returncode != 0 and "CI needs the browser check" in done.stderr
    else:
        assert done.returncode == 0 and "sudo make browser" in done.stdout


@pytest.mark.parametrize("ci", ["", "true"])
def test_browser_test_skips_without_chromium_unless_ci(ci, monkeypatch):
    from test_book import require_browser

    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="sudo make browser"):
        require_browser()


@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep", "vision_lora", "clip_lora", "linear", "zero_shot"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_frozen_layers_cast_once_give_the_same_logits(method, precision, tiny_model):
    """Storing frozen weights in the autocast dtype changes nothing but speed; trainable tensors stay fp32."""
    from vptlib.methods import build
    from vptlib.models.backbone import load_clip
    from vptlib.runs.devices import autocast, cast_frozen

    tiny_clip = load_clip(tiny_model)
    torch.manual_seed(0)
    model = build(method, tiny_clip, 4).eval()
    for p in model.parameters():  # a non-zero head, so the logits depend on the features
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    size = tiny_clip.model.config.vision_config.image_size
    x = torch.randn(3, 3, size, size)
    cpu = torch.device("cpu")
    with torch.no_grad(), autocast(cpu, precision):
        before = model(x).float()
    assert cast_frozen(model, precision) > 0
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    low = {torch.bfloat16, torch.float16}
    assert any(p.dtype in low for p in model.parameters() if not p.requires_grad)
    with torch.no_grad(), autocast(cpu, precision):
        after = model(x).float()
    assert torch.equal(before, after)
    assert cast_frozen(build(method, tiny_clip, 4), "fp32") == 0
