"""Executing a page as `make book` does: its output streamed as it runs, a heartbeat on quiet
stretches, and a cell that runs past the limit stopping the build with one line."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from vptlib import switches
from vptlib.errors import UserError
from vptlib.study import notebooks

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "smoke.yaml"


def _template(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile_path = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A page"), params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_a_pages_output_reaches_the_terminal_as_it_runs(tmp_path, capsys):
    template = _template(tmp_path / "t.ipynb", "print('grid point 1/2: lr=0.1', flush=True)")
    out = notebooks.execute(template, tmp_path / "out.ipynb", PROFILE, {})
    assert out.is_file() and "grid point 1/2: lr=0.1" in capsys.readouterr().out


def test_a_cell_past_the_limit_stops_the_build_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(switches.CELL_TIMEOUT, "2")
    template = _template(tmp_path / "t.ipynb", "import time\ntime.sleep(30)")
    t0 = time.monotonic()
    with pytest.raises(UserError) as exc:
        notebooks.execute(template, tmp_path / "out.ipynb", PROFILE, {})
    assert time.monotonic() - t0 < 25  # stopped at the limit, not after the cell
    msg = str(exc.value)
    assert "\n" not in msg and "past the 2 s limit" in msg and "TIMEOUT=" in msg
    assert not (tmp_path / "out.ipynb").exists() and (tmp_path / "out.failed.ipynb").is_file()


def test_the_timeout_switch_takes_seconds_or_zero():
    import os

    for raw, want in (("", switches.DEFAULT_CELL_TIMEOUT_S), ("0", None), ("90", 90)):
        os.environ[switches.CELL_TIMEOUT] = raw
        try:
            assert switches.cell_timeout() == want
        finally:
            os.environ.pop(switches.CELL_TIMEOUT)
    os.environ[switches.CELL_TIMEOUT] = "1h"
    try:
        with pytest.raises(UserError, match="whole number of seconds"):
            switches.check()
    finally:
        os.environ.pop(switches.CELL_TIMEOUT)


def test_a_quiet_stretch_still_prints_a_line(capsys):
    with notebooks.Heartbeat("executing page.ipynb", every=0.2):
        time.sleep(0.9)
    beats = [line for line in capsys.readouterr().out.splitlines() if line.startswith("... still executing page")]
    assert len(beats) >= 2 and beats[0].endswith("min")


def test_the_readme_states_the_limit_and_the_heartbeat_the_code_uses():
    readme = " ".join((REPO / "docs" / "guide.md").read_text().split())
    hours = switches.DEFAULT_CELL_TIMEOUT_S // 3600
    assert f"default {hours} hours, 0 for no limit" in readme and notebooks.HEARTBEAT_S == 60
    assert "a line a minute" in readme


def test_ctrl_c_during_a_page_is_one_line_without_the_kernels_traceback(tmp_path):
    """Ctrl-C reaches the terminal's process group; the kernel (its own session) is shut down
    under a running cell and logs a zmq traceback: that goes to the page's kernel log."""
    import os
    import signal
    import subprocess
    import sys

    started = tmp_path / "started"
    template = _template(
        tmp_path / "t.ipynb", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(120)"
    )
    cmd = [
        sys.executable,
        "-m",
        "vptlib",
        "book",
        "execute",
        str(template),
        str(tmp_path / "out.ipynb"),
        "--profile",
        str(PROFILE),
    ]
    # A terminal's foreground job takes Ctrl-C; a job started in the background of a script
    # (a CI runner) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    # Restore the default in the child, as a terminal would have it.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip() == "vptlib: interrupted", err
    assert not (tmp_path / "out.ipynb").exists()
