"""The package's shape: subpackages by role, imports pointing one way, modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vptlib"

# Lower layers first; a module may import its own layer and the ones before it, never after.
# The top-level modules (errors, atomic, locks, network, selection) are shared by all.
LAYERS = ("", "data", "models", "methods", "runs", "study", "report", "bench", "cli")
# Modules are sized by concern (the run record is written in one module and read in another;
# the training loop is one module), not cut at a line count. This bound only flags a module
# that has grown into several concerns; it is not a target to split at.
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every vptlib module ``name`` imports, function-local and TYPE_CHECKING imports included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = _modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vptlib")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("vptlib"):
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "__main__":  # ``python -m`` entry points stand above everything, like the CLI
        return "cli"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def test_every_module_belongs_to_a_layer():
    for name in _modules():
        assert _layer(name) in LAYERS, f"{name} is in no layer of {LAYERS}"


def test_no_import_points_up():
    upward = [
        f"{a} ({_layer(a) or 'top'}) imports {b} ({_layer(b)})"
        for a, targets in _graph().items()
        for b in targets
        if LAYERS.index(_layer(b)) > LAYERS.index(_layer(a))
    ]
    assert not upward, (
        "imports must point down the layers " + " < ".join(x or "top" for x in LAYERS) + ":\n" + ("\n".join(upward))
    )


def test_no_import_cycle():
    graph = {a: {b for b in bs if b != a.rpartition(".")[0]} for a, bs in _graph().items()}
    # A package's __init__ re-exporting its modules is not a cycle with them.
    graph = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = path[path.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    # The checks above must be able to fail: a data module importing a run module is upward.
    assert LAYERS.index(_layer("vptlib.runs.engine")) > LAYERS.index(_layer("vptlib.data.dataset"))
    assert _layer("vptlib.errors") == "" and _layer("vptlib.methods") == "methods"
    assert _layer("vptlib.cli") == "cli"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_stay_readable(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: it probably holds several concerns; split it by what it does"


def test_no_function_in_the_run_path_takes_more_than_six_arguments():
    """Issue 44: the run's state travels in one object (RunContext, TrainState, StagedRun)."""
    import ast

    wide = []
    for path in sorted((PACKAGE / "runs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [
                    x.arg for x in (a.vararg, a.kwarg) if x
                ]
                n = len([x for x in names if x not in ("self", "cls")])
                if n > 6:
                    wide.append(f"{path.name}:{node.lineno} {node.name} ({n})")
    assert not wide, wide


def test_formatter_owns_the_layout():
    root = PACKAGE.parent
    markers = sum(p.read_text().count("fmt: skip") for d in ("vptlib", "tests") for p in (root / d).rglob("*.py"))
    assert markers < 15 - 1  # this file names the marker once


def test_the_readme_tree_lists_every_module():
    import re

    readme = (PACKAGE.parent / "docs" / "guide.md").read_text()  # the user guide holds the layout
    tree = readme[readme.index("```text\nvptlib/") : readme.index("```", readme.index("```text\nvptlib/") + 8)]
    for layer in LAYERS:
        on_disk = {p.stem for p in (PACKAGE / layer).glob("*.py") if not p.stem.startswith("__")}
        if layer:
            line = re.search(rf"^  {layer}/\s+(.+)$", tree, re.M)
            assert line, f"the README's tree has no line for {layer}/"
            listed = set(line.group(1).split())
            # a long list continues on the next line when it is all module names
            nxt = tree[line.end() + 1 :].splitlines()[0].split()
            if nxt and set(nxt) <= on_disk:
                listed |= set(nxt)
        else:
            listed = set(tree.splitlines()[2].split("shared:")[0].split())
        assert listed == on_disk, (
            f"{layer or 'top'}: the README lists {sorted(listed)}, the folder has {sorted(on_disk)}"
        )


def test_no_private_name_crosses_a_module():
    """Issue 44: a name one module imports from another is public (no leading underscore)."""
    import ast

    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("vptlib")):
                crossing += [
                    f"{path.name}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not crossing, crossing
