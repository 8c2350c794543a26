"""The README a newcomer reads (issue 45, item 4): short, and every command in it works as
written (make targets exist; every `vptlib` command line parses with the flags it names)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LIMIT = 15_000  # bytes; the rest lives in docs/guide.md


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_is_short_and_links_the_guide():
    assert len(README.encode()) < LIMIT, f"README.md is {len(README.encode())} bytes; move detail to docs/guide.md"
    assert "(docs/guide.md)" in README and (ROOT / "docs" / "guide.md").is_file()
    for needed in ("make book", "make test", "_build/html/index.html", "make run", "PROFILE=smoke", "kaggle-full"):
        assert needed in README, needed


def test_every_make_target_in_the_readme_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    used = [shlex.split(c)[1] for c in _commands() if c.startswith("make ")]
    assert used and set(used) <= targets, set(used) - targets


@pytest.mark.parametrize("command", [c for c in _commands() if c.startswith("vptlib ")])
def test_every_vptlib_command_in_the_readme_parses(command):
    from vptlib.cli import build_parser

    argv = shlex.split(command)[1:]
    try:
        build_parser(argv[0]).parse_args(argv)
    except SystemExit as exc:  # argparse refused a flag or a value
        pytest.fail(f"{command!r} does not parse (exit {exc.code})")
