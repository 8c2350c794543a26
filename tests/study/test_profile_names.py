"""`--profile` means the profile everywhere (issue 45, item 7): a name in profiles/ or its file,
in `vptlib book`, `vptlib data prepare` and `vptlib run` (whose records go under its name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vptlib import REPO
from vptlib.errors import UserError
from vptlib.study.profile import load, profile_file


def test_a_name_and_its_file_are_the_same_profile():
    assert profile_file("smoke") == REPO / "profiles" / "smoke.yaml"
    assert profile_file("profiles/smoke.yaml") == Path("profiles/smoke.yaml")
    assert load("smoke", check_methods=False) == load(REPO / "profiles" / "smoke.yaml", check_methods=False)


def test_a_mistyped_name_gets_a_suggestion():
    with pytest.raises(UserError, match=r"not found \(did you mean smoke\?\); choose PROFILE= one of"):
        load("smok")


def test_vptlib_run_takes_the_profiles_file_and_files_records_under_its_name(prepared, tiny_model, tmp_path):
    from vptlib.cli import main

    argv = ["run", "--method", "zero_shot", "--data", str(prepared), "--model", str(tiny_model), "--epochs", "0"]
    argv += ["--device", "cpu", "--precision", "fp32", "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--profile", str(REPO / "profiles" / "smoke.yaml")]) == 0
    assert main([*argv, "--profile", "mine"]) == 0  # a name is a name, as before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "smoke"]
