"""`vptlib run` answers --help, a mistyped method and a mistyped model folder without importing
torch (issue 45, item 7): its flags come from vptlib/cli/run_flags.json, which must equal what
the registry and RunConfig declare. No timing here (machines differ): what is imported is the
cause of the seconds, and it is the same on every machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vptlib.cli import run_flags

PROBE = """
import sys
from vptlib.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code)
"""


def _probe(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv))], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_the_stored_flags_are_the_registrys():
    stored = json.loads(run_flags.FILE.read_text())
    fresh = run_flags.from_registry()
    assert stored["sources"] == run_flags.source_hash(), "run: python -m vptlib.cli.run_flags"
    assert {k: v for k, v in stored.items() if k != "sources"} == json.loads(json.dumps(fresh))


def test_the_modules_left_out_of_the_flags_hash_feed_no_flag():
    """run_flags.NOT_FLAGS (the recipe cards) stay out of the hash only while the registry that
    makes the flags never imports them: an edit there cannot change a flag, a title or a name."""
    code = "import sys, vptlib.cli.run_flags as r; r.from_registry(); print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    for name in run_flags.NOT_FLAGS:
        assert f"'vptlib.methods.{name.removesuffix('.py')}'" not in loaded.stdout, name


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run", "--help"], "--prompt-tokens"),
        (["run", "--method", "vpt_shalow", "--data", "d"], "(did you mean vpt_shallow?)"),
        (["run", "--method", "linear", "--data", "d", "--model", "models/tiny-clp"], "(did you mean tiny-clip?)"),
        (["run", "--method", "linear", "--data", "d", "--model", "./no-such-folder"], "does not exist"),
    ],
)
def test_run_answers_without_importing_torch(argv, says, tmp_path):
    (tmp_path / "models" / "tiny-clip").mkdir(parents=True)
    res = _probe(*argv, cwd=tmp_path)
    assert says in res.stdout + res.stderr, res.stdout + res.stderr
    assert "NO-TORCH" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_the_library_suggests_too(tmp_path):
    from vptlib.errors import UserError
    from vptlib.methods import spec
    from vptlib.models.hub import resolve

    with pytest.raises(ValueError, match=r"did you mean clip_svd\?"):
        spec("clip_sdv")
    (tmp_path / "tiny-clip").mkdir()
    with pytest.raises(UserError, match=r"does not exist; .* holds: tiny-clip \(did you mean tiny-clip\?\)"):
        resolve(str(tmp_path / "tiny-clp"))


EXECUTOR = """
import sys
import papermill

def stop(*args, **kwargs):  # the kernel is another process: what matters is what this one imported
    print("TORCH" if "torch" in sys.modules else "NO-TORCH", kwargs["parameters"])
    raise SystemExit(0)

papermill.execute_notebook = stop
from vptlib.cli import main
main({argv!r})
"""


def test_a_pages_executor_does_not_import_torch(tmp_path):
    """Every page of make book is a `vptlib book execute` process beside its kernel: it checks the
    parameters, the profile and the overrides without torch (seconds of CPU a page, on two cores)."""
    argv = ["book", "execute", "notebooks/experiment.ipynb", str(tmp_path / "out.ipynb"), "--profile", "smoke"]
    argv += ["-p", "method", "vpt_deep", "--title-from-method"]
    res = subprocess.run(
        [sys.executable, "-c", EXECUTOR.format(argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=run_flags.FILE.parents[2],
    )
    assert "NO-TORCH" in res.stdout and "'method': 'vpt_deep'" in res.stdout, res.stdout + res.stderr
    bad = [*argv[:-4], "-p", "method", "vpt_dep"]
    res = subprocess.run(
        [sys.executable, "-m", "vptlib", *bad],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=run_flags.FILE.parents[2],
    )
    assert res.returncode == 2 and "unknown method 'vpt_dep'" in res.stderr and "Traceback" not in res.stderr
