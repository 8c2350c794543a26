"""Every sub-command has --help; fetch offline stops fast with the manual route."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vptlib", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "cmd",
    [
        [],
        ["data"],
        ["data", "prepare"],
        ["data", "fetch"],
        ["data", "phantoms"],
        ["model"],
        ["model", "tiny"],
        ["run"],
        ["book"],
        ["book", "execute"],
        ["book", "preflight"],
    ],
)
def test_help(cmd, capsys):
    from vptlib.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: vptlib" in capsys.readouterr().out


def test_help_in_a_real_process():
    res = _cli("run", "--help")
    assert res.returncode == 0 and "--prompt-tokens" in res.stdout


def test_fetch_offline_fails_fast_with_instructions(tmp_path):
    t0 = time.monotonic()
    res = _cli("data", "fetch", "--dest", str(tmp_path / "k"), env={"VPTLIB_OFFLINE": "1"})
    assert time.monotonic() - t0 < 30
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset" in res.stderr
    assert f"vptlib data prepare --source {tmp_path / 'k'}" in res.stderr


def test_fetch_without_the_override_also_stops(tmp_path):
    # With no override the reachability probe decides; here (no network) it must refuse quickly.
    env = {k: v for k, v in os.environ.items() if k != "VPTLIB_OFFLINE"}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "vptlib", "data", "fetch", "--dest", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if res.returncode == 0:
        pytest.skip("this machine reaches Kaggle")
    assert time.monotonic() - t0 < 30
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_phantoms_cli(tmp_path):
    res = _cli("data", "phantoms", "--out", str(tmp_path / "p"), "--per-class", "2", "--size", "64")
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "p" / "Testing" / "pituitary").glob("*.jpg"))) == 2
