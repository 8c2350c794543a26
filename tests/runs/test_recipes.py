"""Each method's recipe as its paper's code runs it: gradient clipping, the seeds a
deterministic method needs, the settings a report shows, and pairing across runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import tiny_config
from safetensors.torch import load_file

from vptlib import report
from vptlib.errors import UserError
from vptlib.methods import METHODS
from vptlib.runs.config import RunConfig
from vptlib.runs.engine import run, run_seeds

# What each method's reference code does (read with `search`): WiSE-FT's finetune.py calls
# clip_grad_norm_(params, 1.0), and the study's full fine-tuning follows it; KMnP/vpt's
# trainer, CLIP-LoRA's lora.py and FLYP's flyp_loss.py step without clipping.
CLIPPED_AT = {"full": 1.0, "wise_ft": 1.0}


def test_each_method_clips_as_its_recipe_does():
    for name, s in METHODS.items():
        assert s.defaults.grad_clip == CLIPPED_AT.get(name, 0.0), name
        assert RunConfig(name, "d").resolved().grad_clip == CLIPPED_AT.get(name, 0.0), name
    assert RunConfig("vpt_shallow", "d", grad_clip=2.0).resolved().grad_clip == 2.0  # the user's wins


def test_clipping_applies_and_the_gradient_norm_is_logged(prepared, tiny_model, tmp_path):
    """The head starts at zero: clipped to a norm of 1e-9 it cannot move; unclipped it does."""

    def head_after(clip: float) -> tuple[float, pd.DataFrame]:
        res = run(tiny_config(prepared, tiny_model, tmp_path, epochs=1, lr=0.5, grad_clip=clip), progress=False)
        head = load_file(str(res.run_dir / "trainable.safetensors"))["head.weight"]
        return float(head.abs().max()), res.history

    clipped, hist = head_after(1e-9)
    free, hist_free = head_after(0.0)
    assert clipped < 1e-7 < 1e-3 < free
    for h in (hist, hist_free):
        assert (h.grad_norm_mean > 0).all() and (h.grad_norm_max >= h.grad_norm_mean).all()
    # The first step's norm is measured before clipping, so both runs start from the same norm.
    assert hist.grad_norm_max.iloc[0] > 1e-3


def test_a_deterministic_method_runs_once(prepared, pretrained_tiny, tmp_path):
    """The L-BFGS probe gives one fit whatever the seed: it is reported once, as zero-shot is;
    its SGD variant depends on the seed and runs per seed."""
    cfg = tiny_config(prepared, pretrained_tiny, tmp_path, method="linear", epochs=None, profile="p")
    assert not METHODS["linear"].uses_seed({}) and METHODS["linear"].uses_seed({"solver": "sgd"})
    assert len(run_seeds(cfg, [0, 1, 2], progress=False)) == 1
    group = json.loads((tmp_path / "p" / "linear" / "group.json").read_text())
    assert group["seeds"] == [0]
    assert METHODS["vpt_shallow"].uses_seed({}) and not METHODS["zero_shot"].uses_seed({})


def test_the_settings_column_names_every_optimisation_setting():
    from vptlib.report.loading import SETTINGS, changed_settings

    cfg = {k: 1 for k in SETTINGS} | {"lr": 0.05, "weight_decay": 0.0, "warmup": 5, "method_options": {}}
    shown = changed_settings(cfg)
    for key in ("weight_decay=0", "warmup=5", "grad_clip=1", "schedule=1", "lr=0.05"):
        assert key in shown, key
    assert "weight_decay" not in changed_settings(
        {"epochs": 0, "batch_size": 4, "precision": "fp32", "weight_decay": 0.1}
    )


def _fake(root: Path, method: str, name: str, paths: list[str], labels: list[str]) -> None:
    from vptlib.runs.metrics import classification_report

    d = root / "p" / method / name
    d.mkdir(parents=True)
    rows = [
        {"split": "test", "path": p, "true": t, "pred": t, "prob_a": float(t == "a"), "prob_b": float(t == "b")}
        for p, t in zip(paths, labels, strict=True)
    ]
    pd.DataFrame(rows).to_csv(d / "predictions.csv", index=False)
    import numpy as np

    y = np.array([0 if t == "a" else 1 for t in labels])
    test = classification_report(y, np.eye(2)[y], ("a", "b"))
    (d / "metrics.json").write_text(json.dumps({"test": test, "val": test}))
    (d / "config.json").write_text(json.dumps({"seed": 0, "epochs": 0, "method_options": {}}))
    (root / "p" / method / "group.json").write_text(json.dumps({"runs": [name], "seeds": [0]}))


def test_runs_tested_on_other_images_are_not_paired(tmp_path):
    """Equal counts are not the same images: a comparison of runs on two draws is refused."""
    labels = ["a", "b"] * 5
    _fake(tmp_path, "vpt_shallow", "r0", [f"test/x{i}.png" for i in range(10)], labels)
    _fake(tmp_path, "linear", "r0", [f"test/y{i}.png" for i in range(10)], labels)
    with pytest.raises(UserError, match="different test images"):
        report.significance_table(tmp_path, "p")


def test_the_same_images_with_other_labels_are_not_paired(tmp_path):
    paths = [f"test/x{i}.png" for i in range(10)]
    _fake(tmp_path, "vpt_shallow", "r0", paths, ["a", "b"] * 5)
    _fake(tmp_path, "linear", "r0", paths, ["b", "a"] * 5)
    with pytest.raises(UserError, match="different test images"):
        report.significance_table(tmp_path, "p")


def test_a_build_without_the_reference_compares_nothing(tmp_path):
    """A partial build never switches the reference to whichever method is present."""
    labels = ["a", "b"] * 5
    paths = [f"test/x{i}.png" for i in range(10)]
    _fake(tmp_path, "linear", "r0", paths, labels)
    _fake(tmp_path, "full", "r0", paths, labels)
    sig = report.significance_table(tmp_path, "p", reference="vpt_shallow")
    assert sig.empty and sig.attrs["missing_reference"] == "vpt_shallow"
    sentence = report.significance_sentence(sig)
    assert "make run NB=vpt_shallow PROFILE=p" in sentence and "never made against another method" in sentence
    assert "reference" in report.key_findings(pd.DataFrame({"method": ["x"], "test acc (%)": [1.0]}), sig)


def test_the_book_never_cuts_a_settings_string():
    """A settings cell is shown whole: a cut one hid the run's prompt_tokens on the Results page."""
    import vptlib.report

    vptlib.report.setup()  # as every page's first cell does (importing sets nothing)
    settings = ", ".join(f"option_{i}={i}" for i in range(30)) + ", prompt_tokens=3"
    html = pd.DataFrame({"settings": [settings]})._repr_html_()
    assert "prompt_tokens=3" in html and "..." not in html


def test_predict_on_a_method_folder_lists_its_runs(tmp_path):
    from vptlib.runs.predict import predict

    method = tmp_path / "smoke" / "vpt_shallow"
    names = ["20261201-100000-000001-aaaaaaaa", "20261201-110000-000001-bbbbbbbb", "20261201-120000-000001-cccccccc"]
    for name in names:
        (method / name).mkdir(parents=True)
    for name in names[:2]:
        (method / name / "metrics.json").write_text("{}")
    (method / "group.json").write_text(json.dumps({"runs": [names[1]], "seeds": [0]}))
    with pytest.raises(UserError) as exc:
        predict(method, [tmp_path])
    lines = str(exc.value).splitlines()
    assert "a method's folder, not a run" in lines[0]
    assert lines[1].strip() == f"{method / names[1]}  (in the results table)" and lines[2].strip() == str(
        method / names[0]
    )
    assert len(lines) == 3  # the unfinished run is not offered


def test_a_checkpoint_names_its_run(prepared, tiny_model, tmp_path):
    """trainable.safetensors carries its method, classes, model and hashes in its header."""
    from safetensors import safe_open

    res = run(tiny_config(prepared, tiny_model, tmp_path, epochs=1), progress=False)
    with safe_open(str(res.run_dir / "trainable.safetensors"), "pt") as f:
        meta = f.metadata()
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert meta["method"] == "vpt_shallow" and meta["run_id"] == res.run_dir.name
    assert json.loads(meta["classes"]) == cfg["classes"] and meta["config_hash"] == cfg["config_hash"]
    assert meta["model"] == cfg["model"] and meta["vptlib_version"]


def test_the_schedule_is_open_clips_cosine_lr_and_transformers_after_warm_up():
    # make_scheduler stays hand-written: its warm-up is WiSE-FT's and FLYP's cosine_lr
    # (base_lr * (step + 1) / warmup), which transformers' get_cosine_schedule_with_warmup
    # starts one step later (lr 0 at step 0). Past the warm-up, and with none, they agree.
    import torch
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    from vptlib.runs.config import RunConfig
    from vptlib.runs.training import make_scheduler

    def lrs(sched, opt, steps):
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    def fresh():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    spe, epochs = 7, 6
    total = spe * epochs
    for schedule, hf in (("cosine", get_cosine_schedule_with_warmup), ("constant", get_constant_schedule_with_warmup)):
        for warmup in (0, 2):
            cfg = RunConfig(data="d", method="vpt_deep", epochs=epochs, warmup=warmup, schedule=schedule)
            ours = lrs(make_scheduler(opt := fresh(), cfg, spe), opt, total)
            args = (warmup * spe, total) if schedule == "cosine" else (warmup * spe,)
            theirs = lrs(hf(opt := fresh(), *args), opt, total)
            w = warmup * spe
            assert ours[w:] == pytest.approx(theirs[w:], abs=1e-12)
            assert ours[:w] == pytest.approx([0.1 * (s + 1) / w for s in range(w)])  # cosine_lr's warm-up
