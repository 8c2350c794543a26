"""Every sub-command has --help; fetch offline stops fast with the manual route."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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

    assert main([*cmd, "--help"]) == 0  # argparse's exit becomes main's return code, as for a usage error
    assert "usage: vptlib" in capsys.readouterr().out


def test_help_in_a_real_process():
    res = _cli("run", "--help")
    assert res.returncode == 0 and "--prompt-tokens" in res.stdout


def test_the_command_list_imports_no_torch():
    """`vptlib --help` lists the commands from their help lines without building their parsers:
    the registry (torch, transformers, seconds of imports) is read only by a command that needs it."""
    code = (
        "import sys\nfrom vptlib.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "False False", res.stdout + res.stderr
    for name in ("run", "predict", "book", "data", "model", "sweep"):
        assert f"    {name} " in res.stdout


def test_each_commands_listed_line_is_its_own_help():
    from vptlib.cli.app import ALL, COMMANDS, build_parser

    sub = next(a for a in build_parser(ALL)._actions if a.dest == "command")
    assert {c.dest: c.help for c in sub._choices_actions} == {k: v[1] for k, v in COMMANDS.items()}
    assert build_parser(None).parse_args(["run"]).command == "run"  # a stub parses, with no options


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


def test_a_bare_make_prints_help_and_installs_nothing():
    from vptlib import REPO

    res = subprocess.run(["make", "-n", "-C", str(REPO)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "make book" in res.stdout, res.stdout + res.stderr
    assert "pip install" not in res.stdout and "venv" not in res.stdout.split("make install")[0]


def test_pages_start_longest_first_and_curves_waits_only_for_its_sweeps(tmp_path):
    """make -j starts pages in the `notebooks` order as slots free up: the variants page first
    (it needs no other page), then the experiment pages of the sweeps' methods, then Curves,
    which waits for those only, not for every experiment page (make -n lists them in the order
    a single slot would run them)."""
    import re

    from vptlib import REPO
    from vptlib.study.profile import load

    cmd = ["make", "-n", "-C", str(REPO), "book", "PROFILE=smoke", f"GEN={tmp_path / 'gen'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    pages = [Path(p).stem for p in re.findall(r"book execute notebooks/\S+ (\S+)", res.stdout)]
    sweeps = load(REPO / "profiles" / "smoke.yaml", check_methods=False).sweep_methods
    assert sweeps and pages[: len(sweeps) + 2] == ["variants", *sweeps, "curves"], pages
    assert len(pages) == len(set(pages)) and {"results", "dataset", "checklist"} <= set(pages), pages


def test_preflight_keeps_each_problems_instructions_on_their_lines():
    """The data problem's "then run:" is followed by its commands, each on its own line."""
    from pathlib import Path

    from vptlib.data.fetch import manual_instructions
    from vptlib.study.book import _listed

    msg = _listed("cannot build the full report:", [f"data: {manual_instructions(Path('d'))}", "model: missing"])
    lines = msg.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith("then run:"))
    assert lines[at].startswith("  - data: ") and lines[at + 1].strip().startswith("vptlib data fetch --archive")
    assert lines[at + 2].strip().startswith("vptlib data prepare") and lines[-1] == "  - model: missing"


def test_vptlib_run_has_one_flag_per_runconfig_field_generated_from_it():
    """Issue 44: the CLI is made from RunConfig (its fields' types, defaults, choices and help),
    not copied by hand; every field a user may set has exactly one flag."""
    import dataclasses

    from vptlib.cli import build_parser
    from vptlib.runs.config import RunConfig, command_line_fields

    parser = build_parser("run")
    run = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" run"))
    dests = [a.dest for a in run._actions]
    settable = [f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("flag", True)]
    assert [f.name for f, _ in command_line_fields()] == settable
    for name in settable:
        assert dests.count(name) == 1, name
    assert {f.name for f in dataclasses.fields(RunConfig)} - set(settable) == {"evaluate_test", "options"}
    args = parser.parse_args(["run", "--method", "linear", "--data", "d", "--no-augment", "--batch-size", "8"])
    assert args.augment is False and args.batch_size == 8 and args.schedule == "cosine"
    import inspect

    from vptlib.cli import app

    assert "batch_size=a.batch_size" not in inspect.getsource(app)  # no field copied by hand
