"""The engine: determinism, selection on validation, run records, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_config

from vptlib import atomic
from vptlib.errors import TrainingDiverged, UserError
from vptlib.runs import provenance, records
from vptlib.runs.engine import RunConfig, run

TIMING = {"seconds_per_epoch", "images_per_second", "setup_seconds", "fit_seconds", "seconds"}


def _cfg(prepared, model, out, **kw) -> RunConfig:
    return tiny_config(prepared, model, out, **{**kw})


def _strip(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in TIMING}


def test_same_seed_same_metrics(prepared, tiny_model, tmp_path):
    a = run(_cfg(prepared, tiny_model, tmp_path), progress=False)
    b = run(_cfg(prepared, tiny_model, tmp_path), progress=False)
    assert a.run_dir != b.run_dir  # never overwrites an earlier record
    assert _strip(a.metrics) == _strip(b.metrics)
    assert (a.run_dir / "predictions.csv").read_bytes() == (b.run_dir / "predictions.csv").read_bytes()
    c = run(_cfg(prepared, tiny_model, tmp_path, seed=1), progress=False)
    assert (c.run_dir / "predictions.csv").read_bytes() != (a.run_dir / "predictions.csv").read_bytes()


def test_run_record_contents(prepared, tiny_model, tmp_path):
    res = run(
        _cfg(prepared, tiny_model, tmp_path, method="vpt_deep", epochs=3, profile="smoke", test_curves=True),
        progress=False,
    )
    d = res.run_dir
    assert d.parent.parent.name == "smoke" and d.parent.name == "vpt_deep"
    for name in ("config.json", "metrics.json", "history.csv", "predictions.csv", "trainable.safetensors"):
        assert (d / name).is_file(), name
    assert not (d / "state.pt").exists()
    cfg = json.loads((d / "config.json").read_text())
    for key in ("model_fingerprint", "manifest_hash", "git_commit", "versions", "device", "lr", "text_prompts"):
        assert key in cfg, key
    assert cfg["method_options"] == {"prompt_tokens": 5, "prompt_dropout": 0.0}
    m = res.metrics
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "ece", "accuracy_ci95"):
        assert key in m["test"], key
    assert np.array(m["test"]["confusion_matrix"]).sum() == 80
    assert m["trainable_params"] == 3 * 5 * 64 + 64 * 4 + 4
    assert m["checkpoint_bytes"] < 10_000  # prompts + head only: kilobytes
    hist = pd.read_csv(d / "history.csv")
    assert list(hist.epoch) == [1, 2, 3]
    assert hist.test_acc.notna().all()  # recorded for plots
    preds = pd.read_csv(d / "predictions.csv")
    assert set(preds.split) == {"val", "test"}
    assert np.allclose(preds.filter(like="prob_").sum(axis=1), 1, atol=1e-5)


def test_epoch_is_selected_on_validation(prepared, tiny_model, tmp_path):
    res = run(
        _cfg(
            prepared,
            tiny_model,
            tmp_path,
            method="linear",
            epochs=12,
            lr=0.05,
            test_curves=True,
            options={"solver": "sgd"},
        ),
        progress=False,
    )
    h = res.history
    best = h.sort_values(["val_acc", "val_loss"], ascending=[False, True]).iloc[0]
    assert res.metrics["best_epoch"] == int(best.epoch)
    # The reported test accuracy is that of the selected checkpoint, not the best test epoch.
    assert res.metrics["test"]["accuracy"] == pytest.approx(h.set_index("epoch").test_acc[int(best.epoch)])


def test_linear_feature_cache_is_reused(prepared, tiny_model, tmp_path, monkeypatch):
    # select="last": one fit at the fixed C instead of CLIP's 96-point sweep; what is cached is
    # the same features either way.
    cfg = _cfg(prepared, tiny_model, tmp_path, method="linear", epochs=3, select="last")
    first = run(cfg, progress=False)
    calls = []

    def no_backbone(self, pixel_values):
        calls.append(1)
        raise AssertionError("the backbone ran although its features are cached")

    monkeypatch.setattr("vptlib.methods.linear.LinearProbe.features", no_backbone)
    second = run(cfg, progress=False)
    assert calls == []
    assert _strip(first.metrics) == _strip(second.metrics)


def _kill_then_resume(prepared, tiny_model, tmp_path, epochs=6, kill_after=2):
    args = [
        sys.executable,
        "-m",
        "vptlib",
        "run",
        "--method",
        "vpt_deep",
        "--data",
        str(prepared),
        "--model",
        str(tiny_model),
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    root = tmp_path / "runs" / "default" / "vpt_deep"
    deadline = time.monotonic() + 300
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        hist = list(root.glob("*/history.csv"))
        if hist and len(pd.read_csv(hist[0])) >= kill_after:
            time.sleep(0.3)  # land inside the next epoch
            proc.send_signal(signal.SIGKILL)
            killed_at = len(pd.read_csv(hist[0]))
            break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None and killed_at < epochs, "the run finished before it could be killed"
    run_dir = next(root.iterdir())
    assert not (run_dir / "metrics.json").exists()
    for f in run_dir.glob("*.json"):
        json.loads(f.read_text())  # nothing half-written
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert len(list(root.iterdir())) == 1  # resumed in place
    return run_dir, args


def test_resume_after_sigkill_matches_uninterrupted(prepared, tiny_model, tmp_path):
    run_dir, args = _kill_then_resume(prepared, tiny_model, tmp_path)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    out2 = tmp_path / "clean"
    res = subprocess.run(
        [*args[: args.index("--out") + 1], str(out2), "--quiet"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    clean_dir = next((out2 / "default" / "vpt_deep").iterdir())
    clean = json.loads((clean_dir / "metrics.json").read_text())
    assert _strip(resumed) == _strip(clean)
    assert (run_dir / "predictions.csv").read_bytes() == (clean_dir / "predictions.csv").read_bytes()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    atomic.write_json(target, {"a": 1})

    def half(p: Path):
        p.write_text('{"a": ')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(target, half)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind
    assert oct(target.stat().st_mode & 0o777) != "0o600"


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--method", "vpt"], "unknown method 'vpt'"),
        (["--epochs", "-1"], "--epochs must be >= 0"),
        (["--prompt-tokens", "-3"], "prompt_tokens must be in [0, 200]"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be in [1, 65536]"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["--method", "linear", "--prompt-tokens", "5"], "prompt_tokens do not apply to linear"),
        (["--data", "/no/such/data"], "does not exist"),
        (["--method", "zero_shot", "--epochs", "3"], "zero_shot trains nothing"),
    ],
)
def test_bad_parameters_are_one_line_errors(prepared, tiny_model, tmp_path, flags, needle, capsys):
    from vptlib.cli import main

    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = {"--method": "vpt_shallow", "--data": str(prepared), "--model": str(tiny_model), "--out": str(tmp_path)}
    for i in range(0, len(flags), 2):
        base[flags[i]] = flags[i + 1]
    assert main(["run", *[x for kv in base.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("config.json"))  # refused before any record is written


def test_bad_parameter_in_a_real_process_has_no_traceback(prepared, tiny_model, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vptlib",
            "run",
            "--method",
            "vpt_deep",
            "--data",
            str(prepared),
            "--model",
            str(tiny_model),
            "--lr",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == "vptlib: error: --lr must be a positive number, got 0.0"


def test_nonfinite_loss_refused_before_training(prepared, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("vptlib.methods.base.Classifier.loss", lambda self, logits, y: logits.sum() * float("nan"))
    with pytest.raises(UserError, match="before any training"):
        run(_cfg(prepared, tiny_model, tmp_path), progress=False)


def test_nan_during_training_stops_with_message(prepared, tiny_model, tmp_path, monkeypatch):
    import torch.nn.functional as F

    calls = {"n": 0}

    def flaky(self, logits, y):
        calls["n"] += 1
        loss = F.cross_entropy(logits.float(), y)
        return loss * float("inf") if calls["n"] == 5 else loss

    monkeypatch.setattr("vptlib.methods.base.Classifier.loss", flaky)
    with pytest.raises(TrainingDiverged, match=r"became inf at epoch 1, step 4"):
        run(_cfg(prepared, tiny_model, tmp_path), progress=False)


def test_early_stopping(prepared, tiny_model, tmp_path, monkeypatch):
    def flat(inputs, split, cfg):
        n = len(inputs.splits[split][1])
        return 1.0, np.full((n, 4), 0.25)

    for module in ("evaluation", "training", "record_writer"):
        monkeypatch.setattr(f"vptlib.runs.{module}.evaluate", flat)
    res = run(_cfg(prepared, tiny_model, tmp_path, epochs=10, early_stopping=2), progress=False)
    assert res.metrics["epochs_run"] == 3 and res.metrics["stopped_early"]
    assert res.metrics["best_epoch"] == 1


def test_bf16_path_runs_and_is_recorded(prepared, tiny_model, tmp_path):
    res = run(_cfg(prepared, tiny_model, tmp_path, precision="bf16", epochs=1), progress=False)
    assert res.metrics["precision"] == "bf16"
    assert 0 <= res.metrics["test"]["accuracy"] <= 1


def test_zero_shot_records_prompts(prepared, tiny_model, tmp_path):
    res = run(_cfg(prepared, tiny_model, tmp_path, method="zero_shot", epochs=0), progress=False)
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert "a brain MRI showing a glioma." in cfg["text_prompts"]["glioma"]
    assert res.metrics["trainable_params"] == 0 and res.metrics["epochs_run"] == 0


def test_cli_run_prints_summary(prepared, tiny_model, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vptlib",
            "run",
            "--method",
            "linear",
            "--data",
            str(prepared),
            "--model",
            str(tiny_model),
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert res.returncode == 0, res.stderr
    assert "linear: test accuracy" in res.stdout and "selected epoch" in res.stdout


@pytest.mark.parametrize(
    "method,kw",
    [
        ("vpt_shallow", dict(lr=1e-2, optimizer="adamw")),
        ("vpt_deep", dict(lr=1e-2, optimizer="adamw")),
        ("full", dict(lr=1e-3)),
        ("linear", dict(lr=1e-2, epochs=30)),
        ("vision_lora", dict(lr=5e-3)),
        ("clip_lora", dict(lr=5e-3)),
    ],
)
def test_methods_learn_beyond_chance(prepared, pretrained_tiny, tmp_path, method, kw):
    """80 test images, chance 25%: P(>= 40% by luck) is about 0.2%. Measured ~55-65%."""
    res = run(_cfg(prepared, pretrained_tiny, tmp_path, method=method, **{"epochs": 10, **kw}), progress=False)
    assert res.metrics["test"]["accuracy"] >= 0.40, res.history[["epoch", "train_acc", "val_acc"]]


@pytest.mark.parametrize("method", ["text_ce", "flyp"])
def test_contrastive_runs_through_the_engine(method, prepared, tiny_model, tmp_path):
    res = run(_cfg(prepared, tiny_model, tmp_path, method=method, epochs=1, lr=1e-4), progress=False)
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["text_prompts"]["glioma"]
    frozen = 1 if method == "text_ce" else 0  # text_ce freezes the temperature; FLYP trains it
    assert res.metrics["trainable_params"] == res.metrics["total_params"] - frozen
    assert np.isfinite(res.history.train_loss).all()


def test_test_split_is_not_evaluated_per_epoch_unless_asked(prepared, tiny_model, tmp_path, monkeypatch):
    import vptlib.runs.record_writer as record_writer
    import vptlib.runs.training as training

    seen = []
    real = training.evaluate
    for module in (training, record_writer):
        monkeypatch.setattr(
            module, "evaluate", lambda inputs, split, cfg: seen.append(split) or real(inputs, split, cfg)
        )
    res = run(_cfg(prepared, tiny_model, tmp_path, epochs=3), progress=False)
    assert res.history.test_acc.isna().all()
    assert seen.count("val") == 3 + 1 and seen.count("test") == 1  # per epoch: val only; then the final report
    seen.clear()
    run(_cfg(prepared, tiny_model, tmp_path, epochs=3, test_curves=True), progress=False)
    assert seen.count("test") == 3 + 1


def test_bf16_agrees_with_fp32(prepared, pretrained_tiny, tmp_path):
    """Stated tolerances: the same weights give the same class for >= 95% of test images and
    probabilities within 0.05 under bf16 autocast; trained in bf16, test accuracy is within
    5 points of fp32 (4 of 80 images). `make bench` runs the 1-point check on the smoke profile."""
    from vptlib.data.dataset import Preprocess, load_data, normalize
    from vptlib.runs.devices import autocast

    kw = dict(method="vpt_shallow", epochs=6, lr=1e-2, optimizer="adamw")
    a = run(_cfg(prepared, pretrained_tiny, tmp_path, precision="fp32", **kw), progress=False, keep_model=True)
    b = run(_cfg(prepared, pretrained_tiny, tmp_path, precision="bf16", **kw), progress=False)
    assert abs(a.metrics["test"]["accuracy"] - b.metrics["test"]["accuracy"]) <= 0.05 + 1e-9
    cfg = json.loads((a.run_dir / "config.json").read_text())
    prep = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["preprocess"].items()})
    data = load_data(prepared, prep)
    x = normalize(data.test.pixels, data.prep)
    model = a.model.eval()
    with torch.no_grad():
        p32 = torch.softmax(model(x).float(), -1)
        with autocast(torch.device("cpu"), "bf16"):
            p16 = torch.softmax(model(x).float(), -1)
    assert (p32.argmax(1) == p16.argmax(1)).float().mean() >= 0.95
    assert (p32 - p16).abs().max() <= 0.05


def test_few_shot_subset_is_stratified_nested_and_cached(prepared, tiny_model, tmp_path, monkeypatch):
    from vptlib.data.dataset import Preprocess, load_data
    from vptlib.models.backbone import load_clip

    data = load_data(prepared, Preprocess.from_processor(load_clip(tiny_model).processor))
    two, five = data.few_shot(2, seed=3), data.few_shot(5, seed=3)
    assert torch.bincount(two.train.labels).tolist() == [2, 2, 2, 2]
    assert set(two.train.paths) <= set(five.train.paths)  # nested
    assert data.few_shot(2, seed=4).train.paths != two.train.paths
    # Few labels everywhere: validation keeps min(K, its size) per class, nested; test is whole.
    assert torch.bincount(two.val.labels).tolist() == [2, 2, 2, 2] and set(two.val.paths) <= set(five.val.paths)
    assert torch.bincount(data.few_shot(50, seed=3).val.labels).tolist() == torch.bincount(data.val.labels).tolist()
    assert len(two.test) == len(data.test)
    res = run(_cfg(prepared, tiny_model, tmp_path, method="linear", epochs=2, train_per_class=3), progress=False)
    assert res.metrics["train_images"] == 12
    assert (pd.read_csv(res.run_dir / "predictions.csv").split == "val").sum() == 12
    # The cached features of the whole split serve the subset: the backbone is not called again.
    monkeypatch.setattr("vptlib.methods.linear.LinearProbe.features", lambda *a: (_ for _ in ()).throw(AssertionError))
    again = run(_cfg(prepared, tiny_model, tmp_path, method="linear", epochs=2, train_per_class=5), progress=False)
    assert again.metrics["train_images"] == 20


def test_reuse_returns_the_finished_run_without_training(prepared, tiny_model, tmp_path, monkeypatch):
    import vptlib.runs.engine as engine

    first = run(_cfg(prepared, tiny_model, tmp_path, epochs=1), progress=False)
    monkeypatch.setattr(
        engine, "_train_and_record", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again"))
    )
    again = run(_cfg(prepared, tiny_model, tmp_path, epochs=1), reuse=True, progress=False)
    assert again.run_dir == first.run_dir and again.metrics == first.metrics
    # Code that changed since makes the record stale: it is not reused.
    monkeypatch.setattr(provenance, "code_hash", lambda: "other")
    with pytest.raises(AssertionError, match="trained again"):
        run(_cfg(prepared, tiny_model, tmp_path, epochs=1), reuse=True, progress=False)


def test_run_seeds_writes_the_group(prepared, tiny_model, tmp_path):
    from vptlib.runs.engine import run_seeds

    res = run_seeds(_cfg(prepared, tiny_model, tmp_path, epochs=1, profile="g"), [0, 1], progress=False)
    group = json.loads((tmp_path / "g" / "vpt_shallow" / "group.json").read_text())
    assert group == {"runs": [r.run_dir.name for r in res], "seeds": [0, 1]}
    zs = run_seeds(
        _cfg(prepared, tiny_model, tmp_path, method="zero_shot", epochs=0, profile="g"), [0, 1], progress=False
    )
    assert len(zs) == 1  # nothing trains, so one run stands for every seed


def test_wise_ft_chooses_alpha_on_validation(prepared, tiny_model, tmp_path):
    res = run(_cfg(prepared, tiny_model, tmp_path, method="wise_ft", epochs=1, lr=1e-4), progress=False)
    m = res.metrics
    curve = pd.DataFrame(m["wise_ft_curve"])
    assert list(curve.alpha) == [round(0.1 * i, 1) for i in range(11)]
    best = curve.sort_values(["val_acc", "val_loss", "alpha"], ascending=[False, True, True]).iloc[0]
    assert m["wise_ft_alpha"] == best.alpha
    assert m["val"]["accuracy"] == pytest.approx(best.val_acc)
    from vptlib import report

    axes = report.plot_history(res.run_dir).axes
    assert len(axes) == 4  # loss, accuracy, gradient norm, and accuracy against alpha
    assert len(axes[2].get_lines()) == 3  # WiSE-FT clips at 1.0: the threshold is drawn
    # The saved checkpoint is the mixed model: test_portability checks that reloading it
    # reproduces the recorded predictions, in fp32 and in bf16.


# VPT with SGD: its head starts at zero, so the prompts' first gradients are tiny, and AdamW
# would scale their float32 rounding noise up to full-size steps in either run.
@pytest.mark.parametrize(("method", "lr", "opt"), [("vpt_shallow", 0.05, "sgd"), ("flyp", 1e-4, "adamw")])
def test_data_parallel_under_accelerate_matches_one_process(method, lr, opt, prepared, tiny_model, tmp_path):
    """2 CPU processes (gloo) launched by `accelerate launch`: same metrics as one process
    within 1e-5, and one run record written once. FLYP's in-batch loss gathers the batch
    across processes, so it matches too (batch 13: the processes' shares differ in size)."""
    batch = "12" if method == "vpt_shallow" else "13"
    args = [
        "--method",
        method,
        "--data",
        str(prepared),
        "--model",
        str(tiny_model),
        "--epochs",
        "2",
        "--batch-size",
        batch,
        "--lr",
        str(lr),
        "--optimizer",
        opt,
        "--precision",
        "fp32",
        "--quiet",
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launcher = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "vptlib",
    ]
    ddp = subprocess.run(
        [*launcher, "run", *args, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("test accuracy") == 1  # one summary line, from the main process
    one = run(
        _cfg(
            prepared,
            tiny_model,
            tmp_path / "one",
            **{
                "method": method,
                "epochs": 2,
                "batch_size": int(batch),
                "lr": lr,
                "optimizer": opt,
                "precision": "fp32",
            },
        ),
        progress=False,
    )
    dirs = records.run_dirs(tmp_path / "ddp" / "default" / method)
    assert len(dirs) == 1
    m = json.loads((dirs[0] / "metrics.json").read_text())
    assert m["processes"] == 2 and one.metrics["processes"] == 1
    h2, h1 = pd.read_csv(dirs[0] / "history.csv"), one.history
    for col in ("train_loss", "val_loss", "val_acc"):
        assert np.allclose(h2[col], h1[col], atol=1e-5), col
    # The probabilities agree to 1e-4; a test image whose two top classes are that close may
    # flip (the random tiny model sits near chance), so accuracy may differ by one image.
    assert m["test"]["accuracy"] == pytest.approx(one.metrics["test"]["accuracy"], abs=1 / 80 + 1e-9)
    p2 = pd.read_csv(dirs[0] / "predictions.csv").filter(like="prob_").to_numpy()
    p1 = pd.read_csv(one.run_dir / "predictions.csv").filter(like="prob_").to_numpy()
    assert np.abs(p2 - p1).max() < 1e-4


def test_linear_probe_is_clips_protocol(prepared, pretrained_tiny, tmp_path):
    """L-BFGS logistic regression on the cached features, C chosen on validation, no epochs,
    deterministic; the head holds exactly scikit-learn's solution for the chosen C."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from vptlib.methods.linear import C_GRID

    a = run(_cfg(prepared, pretrained_tiny, tmp_path, method="linear"), progress=False, keep_model=True)
    b = run(_cfg(prepared, pretrained_tiny, tmp_path, method="linear"), progress=False)
    m = a.metrics
    assert m["epochs_run"] == 0 and len(a.history) == 0
    curve = pd.DataFrame(m["linear_probe_curve"])
    assert list(curve.C) == list(C_GRID)
    best = curve.sort_values(["val_acc", "val_loss", "C"], ascending=[False, True, True]).iloc[0]
    assert m["linear_probe_C"] == best.C and m["val"]["accuracy"] == pytest.approx(best.val_acc)
    assert (a.run_dir / "predictions.csv").read_bytes() == (b.run_dir / "predictions.csv").read_bytes()
    x = load_file_features(prepared, a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=best.C, max_iter=1000).fit(*x)
    np.testing.assert_allclose(a.model.head.weight.detach().numpy(), clf.coef_, atol=1e-5)
    assert m["train_accuracy"] > 0.5


def load_file_features(prepared, res):
    from safetensors.torch import load_file

    from vptlib.data.manifest import read_manifest

    (cache,) = (prepared / "cache").glob(
        f"features-{json.loads((res.run_dir / 'config.json').read_text())['model_fingerprint']}*"
    )
    feats = load_file(str(cache))["train"].double().numpy()
    df = read_manifest(prepared)
    classes = json.loads((res.run_dir / "config.json").read_text())["classes"]
    labels = np.array([classes.index(c) for c in df[df.split == "train"]["class"]])
    return feats, labels


@pytest.mark.parametrize("method", ["vision_lora", "vpt_shallow", "vpt_deep"])
def test_full_profile_settings_train_the_head(method, prepared, pretrained_tiny, tmp_path):
    """With the full profile's own learning rates and schedule (epochs cut to 10), every
    method with a new head fits its training split well above chance (25%). A Kaiming head
    at these learning rates stayed near random (the audit measured LoRA train accuracy
    0.12 to 0.39)."""
    from vptlib.runs.engine import run_config
    from vptlib.study import book

    prof = book.load_profile(book.REPO / "profiles" / "full.yaml")
    hp = {**prof.hparams[method]}
    hp["epochs"] = min(hp.get("epochs", 10), 10)
    hp["warmup"] = min(hp.get("warmup", 0), 2)
    cfg = run_config(
        method,
        {method: hp},
        data=str(prepared),
        model=str(pretrained_tiny),
        device="cpu",
        precision="fp32",
        batch_size=prof.batch_size,
        out=str(tmp_path),
    )
    res = run(cfg, progress=False)
    assert res.metrics["train_accuracy"] >= 0.5, res.history[["epoch", "train_acc", "val_acc"]]


def test_a_grid_point_cannot_look_at_test(prepared, tiny_model, tmp_path, monkeypatch):
    """evaluate_test=False: the test split is not staged, the scorer refuses it, and the
    record (WiSE-FT's alpha curve included) holds no test number; the ledger has no entry."""
    from vptlib.runs import evaluation

    asked = []
    real = evaluation.evaluate
    monkeypatch.setattr(
        evaluation, "evaluate", lambda inputs, split, cfg: asked.append(split) or real(inputs, split, cfg)
    )
    cfg = _cfg(prepared, tiny_model, tmp_path, method="wise_ft", epochs=1, lr=1e-4, evaluate_test=False)
    res = run(cfg, progress=False)
    assert "test" not in asked
    assert res.metrics["test"] is None and not res.metrics["test_evaluated"]
    assert all("test_acc" not in row for row in res.metrics["wise_ft_curve"])
    assert not (tmp_path / "default" / "test-ledger.jsonl").exists()
    staged = evaluation.Scorer.__new__(evaluation.Scorer)
    staged.splits = ("train", "val")
    with pytest.raises(PermissionError, match="may not look at the test split"):
        staged("test")


def test_the_ledger_counts_every_look_at_test(prepared, tiny_model, tmp_path):
    """The reported evaluation, each epoch of a test curve, and each test score a method asked
    for after training (WiSE-FT's curve over alpha) are each one ledger line."""
    from vptlib.runs import ledger

    run(_cfg(prepared, tiny_model, tmp_path, epochs=2, test_curves=True), progress=False)
    res = run(_cfg(prepared, tiny_model, tmp_path, method="wise_ft", epochs=1, lr=1e-4), progress=False)
    entries = ledger.read_ledger(tmp_path / "default")
    vpt = [e for e in entries if e["method"] == "vpt_shallow"]
    assert [e["what"] for e in vpt] == ["reported", "epoch 1 curve (plot only)", "epoch 2 curve (plot only)"]
    wise = [e for e in entries if e["method"] == "wise_ft"]
    assert len(wise) == 1 + len(res.metrics["wise_ft_curve"])  # the reported look and one per alpha
    assert {e["run_id"] for e in wise} == {res.run_dir.name}
