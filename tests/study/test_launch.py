"""Sweeps through submitit: the same runs as the worker pool, reused by it and by the book."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cloudpickle
import pytest
from helpers import sweep_profile
from tqdm import tqdm

from vptlib.cli.app import main
from vptlib.errors import UserError
from vptlib.runs import ledger
from vptlib.study import launch
from vptlib.study.sweep import run_sweep


def _profile(prepared, tiny_model, tmp_path) -> dict:
    few = {"methods": ["zero_shot", "linear", "vpt_shallow"], "train_per_class": [2, 4], "seeds": [0]}
    return sweep_profile(prepared, tiny_model, tmp_path, {"few": few})


def _ledger(tmp_path: Path) -> list:
    return ledger.read_ledger(tmp_path / "s-few")  # a sweep's runs are their own profile


def test_a_local_submitit_sweep_is_reused_by_the_pool(prepared, tiny_model, tmp_path):
    """Each point runs in its own submitit subprocess as an ordinary run; the pool (what the
    book's curve pages call) then finds every one finished, and the ledger is unchanged."""
    prof = _profile(prepared, tiny_model, tmp_path)
    df = run_sweep(prof, "few", workers=2, progress=False, launcher="submitit", cluster="local")
    assert len(df) == 6 and (df.error == "").all(), df.error.tolist()
    assert all((Path(d) / "metrics.json").is_file() for d in df.run_dir)
    logs = sorted((tmp_path / "s" / "sweeps" / "few-submitit").glob("*_log.out"))
    assert len(logs) == 6  # one subprocess per point
    pids = {p.name.split("_")[0] for p in logs}
    assert str(os.getpid()) not in pids and len(pids) == 6
    looks = _ledger(tmp_path)
    assert len(looks) >= 6
    again = run_sweep(prof, "few", workers=1, progress=False)  # the pool, as make book runs it
    assert list(again.run_dir) == list(df.run_dir)  # every point reused, none retrained
    assert _ledger(tmp_path) == looks


def test_the_debug_cluster_runs_in_this_process(prepared, tiny_model, tmp_path):
    prof = _profile(prepared, tiny_model, tmp_path)
    prof["sweeps"]["few"] = {"methods": ["linear"], "train_per_class": [2], "seeds": [0]}
    df = run_sweep(prof, "few", progress=False, launcher="submitit", cluster="debug")
    assert (df.error == "").all() and Path(df.run_dir[0]).is_dir()
    assert list(run_sweep(prof, "few", progress=False).run_dir) == list(df.run_dir)


def _dies_on_b(cfg):
    if cfg == "b":
        os._exit(3)  # as the out-of-memory killer would leave it
    return {"run_dir": f"/runs/{cfg}", "error": "", "pinned": os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_a_dead_job_costs_only_its_point_and_gpus_rotate(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)  # it waits 15 s for slow disks
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job subprocess cannot import tests/
    try:
        rows = [{}, {}, {}, {}]
        bar = tqdm(total=4, disable=True)
        cfgs = ["a", "b", "c", "d"]
        launch.submit_points(rows, cfgs, tmp_path, "local", 2, [0, 1], 1, {}, bar, _dies_on_b)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r["run_dir"] for r in rows] == ["/runs/a", "", "/runs/c", "/runs/d"]
    assert "died" in rows[1]["error"] and "not produced any output" in rows[1]["error"]
    assert rows[1]["error"].endswith("_log.err")  # where to look
    assert {r["pinned"] for r in rows if "pinned" in r} <= {"0", "1"}  # one GPU each, not all on GPU 0
    assert len({r["pinned"] for r in rows if "pinned" in r}) == 2


def test_bad_launcher_settings_fail_before_any_run(prepared, tiny_model, tmp_path, monkeypatch, capsys):
    prof = _profile(prepared, tiny_model, tmp_path)
    with pytest.raises(UserError, match="choose one of pool, submitit"):
        run_sweep(prof, "few", launcher="ray", progress=False)
    with pytest.raises(UserError, match="submitit refused"):
        run_sweep(prof, "few", launcher="submitit", params={"colour_depth": 3}, progress=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UserError, match="sbatch is not on this machine's PATH.*--cluster local"):
        run_sweep(prof, "few", launcher="submitit", cluster="slurm", progress=False)
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("*/tuning.csv"))
    assert launch.parse_params(["timeout_min=90", "mem_gb=1.5", "slurm_partition=gpu"]) == {
        "timeout_min": 90,
        "mem_gb": 1.5,
        "slurm_partition": "gpu",
    }
    with pytest.raises(UserError, match="NAME=VALUE"):
        launch.parse_params(["partition"])


def test_the_cli_takes_the_launcher(prepared, tiny_model, tmp_path, capsys):
    prof = _profile(prepared, tiny_model, tmp_path)
    prof["sweeps"]["few"] = {"methods": ["zero_shot"], "seeds": [0]}
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(prof))  # JSON is YAML
    rc = main(["sweep", "--profile", str(path), "--name", "few", "--launcher", "submitit", "--quiet"])
    assert rc in (0, None) and "1 of 1 points finished" in capsys.readouterr().out
    assert main(["sweep", "--profile", str(path), "--name", "few", "--submitit-param", "timeout_min=5"]) == 2
    assert "--launcher submitit only" in capsys.readouterr().err
