"""The book's overrides: one file per records folder, one make stamp per method, and the
rule that only the book's own build names the runs the book shows."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from vptlib import switches
from vptlib.cli.app import main
from vptlib.errors import UserError
from vptlib.runs import records
from vptlib.study import overrides, tuning
from vptlib.study.profile import load

SMOKE = "profiles/smoke.yaml"


def test_make_run_replaces_a_methods_overrides_and_reset_drops_them(tmp_path):
    file = overrides.path(tmp_path, "smoke")
    overrides.set_method(file, "vision_lora", {"rank": 4, "lr": 0.01})
    overrides.set_method(file, "vpt_deep", {"prompt_tokens": 3})
    overrides.set_method(file, "vision_lora", {"rank": 8})  # a second make run replaces, never merges
    assert overrides.load(file) == {"vision_lora": {"rank": 8}, "vpt_deep": {"prompt_tokens": 3}}
    assert file.read_text().startswith("# The book's overrides")  # says what writes it
    assert overrides.drop(file, "vpt_deep") == ["vpt_deep"]
    assert overrides.drop(file, "vpt_deep") == []
    assert overrides.drop(file) == ["vision_lora"]
    assert not file.exists()  # nothing left: no file


def test_only_the_changed_methods_stamp_moves(tmp_path):
    file, stamps = overrides.path(tmp_path, "smoke"), tmp_path / "stamps"
    methods = ["vpt_shallow", "vpt_deep", "linear"]
    assert overrides.write_stamps(file, stamps, methods) == methods  # first build: every stamp
    before = {m: overrides.stamp(stamps, m).stat().st_mtime_ns for m in methods}
    assert overrides.write_stamps(file, stamps, methods) == []  # unchanged: no stamp moves
    overrides.set_method(file, "vpt_deep", {"prompt_tokens": 3})
    os.utime(file)
    assert overrides.write_stamps(file, stamps, methods) == ["vpt_deep"]
    after = {m: overrides.stamp(stamps, m).stat().st_mtime_ns for m in methods}
    assert [m for m in methods if after[m] != before[m]] == ["vpt_deep"]
    assert json.loads(overrides.stamp(stamps, "vpt_deep").read_text()) == {"prompt_tokens": 3}
    overrides.drop(file, "vpt_deep")
    assert overrides.write_stamps(file, stamps, methods) == ["vpt_deep"]  # dropping re-executes it too


@pytest.mark.parametrize("text", ["vpt_deep: [1, 2\n", "- 1\n- 2\n", "vpt_deep: 3\n"])
def test_a_damaged_file_is_one_line_that_names_the_way_out(tmp_path, text):
    file = overrides.path(tmp_path, "smoke")
    file.parent.mkdir(parents=True)
    file.write_text(text)
    with pytest.raises(UserError, match="make reset") as err:
        overrides.load(file)
    assert "\n" not in str(err.value) and str(file) in str(err.value)


def test_the_page_says_which_settings_are_overrides(monkeypatch):
    prof = load(SMOKE, check_methods=False)
    assert overrides.note("vpt_deep", {}, prof) == ""  # the profile's settings: nothing to say
    monkeypatch.setenv(switches.BOOK, "1")
    said = overrides.note("vpt_deep", {"prompt_tokens": 3}, prof)
    assert "`prompt_tokens = 3`" in said and "make reset NB=vpt_deep" in said
    assert overrides.path(prof.runs, prof.profile).as_posix() in said
    monkeypatch.delenv(switches.BOOK)
    outside = overrides.note("vpt_deep", {"prompt_tokens": 3}, prof)
    assert records.GROUP_OUTSIDE in outside and "make reset" not in outside


def test_a_notebook_outside_the_build_may_not_change_the_book(monkeypatch):
    """A kernel the build did not start (plain papermill, Jupyter) names its runs elsewhere;
    the build's pages (VPTLIB_BOOK) and code outside any notebook (tests, scripts) do not."""
    monkeypatch.delenv(switches.BOOK, raising=False)
    assert tuning.in_book()  # not a notebook
    shell = type("ZMQInteractiveShell", (), {"__module__": "ipykernel.zmqshell"})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert not tuning.in_book()
    monkeypatch.setenv(switches.BOOK, "1")
    assert tuning.in_book()


def test_the_cli_shows_drops_and_stamps(tmp_path, monkeypatch, capsys):
    profile = tmp_path / "p.yaml"
    profile.write_text(Path(SMOKE).read_text() + f"\nruns: {tmp_path / 'runs'}\n")
    file = overrides.path(tmp_path / "runs", "smoke")
    overrides.set_method(file, "vpt_deep", {"prompt_tokens": 3})
    assert main(["book", "overrides", "--profile", str(profile)]) == 0
    assert "vpt_deep: {'prompt_tokens': 3}" in capsys.readouterr().out
    stamps = tmp_path / "stamps"
    assert main(["book", "overrides", "--profile", str(profile), "--stamps", str(stamps), "--methods", "vpt_deep"]) == 0
    assert json.loads((stamps / "vpt_deep.json").read_text()) == {"prompt_tokens": 3}
    assert main(["book", "overrides", "--profile", str(profile), "--drop", "vpt_deep"]) == 0
    assert "overrides dropped: vpt_deep" in capsys.readouterr().out
    assert overrides.load(file) == {}
