"""One schema for every profile value and environment switch: a bad one is refused with
one line and exit code 2 before any work; a value YAML 1.1 mistypes is read as meant."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vptlib import switches
from vptlib.errors import UserError
from vptlib.study import profile as profile_mod
from vptlib.study import schema

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "profiles" / "smoke.yaml").read_text()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def _edit(old: str, new: str) -> str:
    assert old in SMOKE, old
    return SMOKE.replace(old, new, 1)


BAD = {
    "epochs infinite": ("vpt_deep: {epochs: 8,", "vpt_deep: {epochs: .inf,", "whole number"),
    "epochs fractional": ("vpt_deep: {epochs: 8,", "vpt_deep: {epochs: 2.5,", "whole number"),
    "lr not finite": ("vpt_deep: {epochs: 8, lr: 0.01", "vpt_deep: {epochs: 8, lr: .nan", "finite number"),
    "lr text": ("vpt_deep: {epochs: 8, lr: 0.01", "vpt_deep: {epochs: 8, lr: fast", "finite number"),
    "bool as text": ("linear: {}", "linear: {through_backbone: 'yes'}", "true or false"),
    "option type": ("vpt_deep: {epochs: 8,", "vpt_deep: {prompt_tokens: '5', epochs: 8,", "whole number"),
    "seed twice": ("seeds: [0, 1]", "seeds: [0, 1, 1]", "twice"),
    "grid value twice": ("vpt_deep: {lr: [0.01, 0.03]}", "vpt_deep: {lr: [0.01, 0.01]}", "twice"),
    "grid value type": ("vpt_deep: {lr: [0.01, 0.03]}", "vpt_deep: {epochs: [2, 2.5]}", "whole number"),
    "sweep value type": ("train_per_class: [2, 8, 24]", "train_per_class: [2, '8', 24]", "whole number"),
    "sweep count": ("train_per_class: [2, 8, 24]", "train_per_class: [0, 8]", "at least 1"),
    "sweep seed twice": (
        "    train_per_class: [2, 8, 24]\n    seeds: [0, 1]",
        "    train_per_class: [2]\n    seeds: [0, 0]",
        "twice",
    ),
    "data make cannot name": ("data: data/smoke", "data: 'data/a:b'", "make cannot"),
    "unknown choice": (
        "vpt_deep: {epochs: 8, lr: 0.01, optimizer: adamw}",
        "vpt_deep: {epochs: 8, lr: 0.01, optimizer: adam}",
        "sgd or adamw",
    ),
    "misspelt option": ("linear: {}", "linear: {solvr: lbfgs}", "solvr do not apply"),
    "device": ("device: auto", "device: gpu", "device must be one of"),
    "banner": ("banner: smoke", "banner: loud", "banner must be one of"),
    "phantom count as text": ("per_class: 40, size: 128", "per_class: '40', size: 128", "phantoms: per_class"),
    "prepare count": (
        "train_per_class: 30, test_per_class: 20",
        "train_per_class: -3, test_per_class: 20",
        "per-class",
    ),
    "prepare fraction": ("val_fraction: 0.2", "val_fraction: 1.5", "val-fraction"),
    "prepare unknown": ("val_fraction: 0.2, seed: 0}", "val_fraction: 0.2, seed: 0, shuffle: 1}", "shuffle"),
    "grid value out of range": (
        "full: {lr: [0.001, 0.0003]}",
        "full: {lr: [0.001, -1]}",
        "grids.full.lr: --lr must be a positive",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_value_is_refused_naming_it(case, tmp_path):
    old, new, why = BAD[case]
    with pytest.raises(UserError, match=why):
        profile_mod.load(_write(tmp_path, _edit(old, new)))


def test_a_grid_too_large_to_run_is_refused_before_it_is_materialised(tmp_path):
    lrs = ", ".join(str(1e-3 * (i + 1)) for i in range(200))
    wds = ", ".join(str(1e-5 * i) for i in range(200))
    text = _edit("vpt_deep: {lr: [0.01, 0.03]}", f"vpt_deep: {{lr: [{lrs}], weight_decay: [{wds}]}}")
    with pytest.raises(UserError, match=f"40000 points .* at most {schema.MAX_GRID}"):
        profile_mod.load(_write(tmp_path, text))


def test_yaml_1_1_numbers_are_read_as_the_numbers_meant(tmp_path):
    # PyYAML (YAML 1.1) loads 1e-3 as the string "1e-3"; the run setting is the float.
    prof = profile_mod.load(
        _write(tmp_path, _edit("vpt_shallow: {epochs: 8, lr: 0.01", "vpt_shallow: {epochs: 8.0, lr: 1e-3"))
    )
    assert prof.hparams["vpt_shallow"]["lr"] == 0.001 and isinstance(prof.hparams["vpt_shallow"]["epochs"], int)
    cfg = prof.run_config("vpt_shallow")
    assert cfg.lr == 0.001 and cfg.epochs == 8


@pytest.mark.parametrize("nested", [True, False])
def test_an_alias_bomb_is_refused_quickly(tmp_path, nested):
    if nested:  # "billion laughs": 9^7 strings from a 400-byte file
        lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
        for prev, name in zip("abcdef", "bcdefg", strict=True):
            lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
        text = "\n".join(lines) + "\n"
    else:  # a list that contains itself
        text = "profile: &p [*p]\n"
    with pytest.raises(UserError, match="expands to more than|not valid YAML"):
        profile_mod.load(_write(tmp_path, text))


def test_an_oversized_profile_is_refused(tmp_path):
    with pytest.raises(UserError, match="larger than"):
        profile_mod.load(_write(tmp_path, SMOKE + "#" * schema.MAX_BYTES))


@pytest.mark.parametrize(
    "value, on",
    [
        ("", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
        ("false", False),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("True", True),
    ],
)
def test_dry_run_reads_only_documented_yes_no_values(monkeypatch, value, on):
    monkeypatch.setenv("VPTLIB_DRY_RUN", value)
    assert switches.flag("VPTLIB_DRY_RUN") is on
    assert profile_mod.load(ROOT / "profiles" / "smoke.yaml").dry_run is on


@pytest.mark.parametrize("value", ["maybe", "2", "n0"])
def test_an_undocumented_switch_value_is_refused(monkeypatch, value):
    monkeypatch.setenv("VPTLIB_DRY_RUN", value)
    with pytest.raises(UserError, match="not a yes/no value"):
        profile_mod.load(ROOT / "profiles" / "smoke.yaml")


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "1"},
        {"RANK": "2", "WORLD_SIZE": "2"},
        {"RANK": "x"},
        {"WORLD_SIZE": "0"},
        {"LOCAL_RANK": "3", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
        {"RANK": "1", "WORLD_SIZE": "2"},  # both left over, but no launcher's rendezvous
    ],
)
def test_distributed_variables_must_describe_a_real_launch(monkeypatch, env):
    for k in switches.DISTRIBUTED:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError):
        switches.world()


def test_a_consistent_launch_is_accepted(monkeypatch):
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    assert switches.world() == (1, 2)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vptlib", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, env, needle",
    [
        (["sweep", "--profile", "profiles/smoke.yaml", "--name", "fewshot", "--workers", "-1"], {}, "--workers"),
        (["sweep", "--profile", "profiles/smoke.yaml", "--name", "fewshot", "--workers", "0"], {}, "--workers"),
        (["book", "preflight", "--profile", "profiles/smoke.yaml"], {"VPTLIB_DRY_RUN": "maybe"}, "VPTLIB_DRY_RUN"),
        (["run", "--method", "linear", "--data", "nowhere"], {"RANK": "1"}, "RANK=1"),
        # str.isdigit() accepts superscripts and other scripts' digits; int() then raises.
        (["run", "--method", "linear", "--data", "nowhere"], {"RANK": "\u00b2"}, "RANK='\u00b2'"),
        (["run", "--method", "linear", "--data", "nowhere"], {"VPTLIB_CELL_TIMEOUT": "\u00b2"}, "make TIMEOUT="),
        (["run", "--method", "linear", "--data", "nowhere"], {"WORLD_SIZE": "\u0663"}, "WORLD_SIZE="),
        (["sweep", "--profile", "profiles/smoke.yaml", "--name", "fewshot", "--workers", "\u00b2"], {}, "--workers"),
    ],
)
def test_bad_switches_and_counts_are_one_line_and_exit_2_before_any_work(args, env, needle):
    done = _cli(*args, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith("vptlib: error:")]
    assert len(lines) == 1 and needle in lines[0], done.stderr


def test_a_data_folder_with_a_space_is_one_make_target(tmp_path):
    """make splits file names at spaces: the profile look-up escapes them, so the data's
    manifest stays one target and one prerequisite of every page."""
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    for name in (".venv", "vptlib", "notebooks"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "space.yaml").write_text(SMOKE.replace("data: data/smoke", 'data: "data/my data"'))
    done = subprocess.run(
        ["make", "-n", "-p", "PROFILE=space", "help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    targets = [line.split(":")[0] for line in done.stdout.splitlines() if line.endswith("| .venv/.installed")]
    assert "data/my data/manifest.csv" in targets and "data/my" not in targets, targets


@pytest.mark.parametrize(
    "args, why", [("-p epochs 2.5", "whole number"), ("-p optimizer adam", "sgd or adamw"), ("-p lr -1", "positive")]
)
def test_make_run_refuses_a_bad_value_before_executing(tmp_path, args, why):
    from vptlib.study import rerun

    with pytest.raises(UserError, match=why):
        rerun.rerun("smoke", "vpt_shallow", args, tmp_path / "generated")
    assert not (tmp_path / "generated").exists()  # nothing executed, nothing written


def test_numpy_numbers_are_typed_like_python_ones():
    import numpy as np

    from vptlib.runs.config import coerce

    typed = coerce("vpt_deep", {"epochs": np.int64(3), "lr": np.float32(0.5), "prompt_tokens": np.float64(4.0)}, "x")
    assert typed == {"epochs": 3, "lr": 0.5, "prompt_tokens": 4} and type(typed["epochs"]) is int
    for bad in ({"epochs": np.float64(2.5)}, {"epochs": True}, {"lr": np.float64("nan")}):
        with pytest.raises(UserError):
            coerce("vpt_deep", bad, "x")
