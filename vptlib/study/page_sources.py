"""Which of vptlib's files each page of the book is made by, read from the code itself.

A page re-executes when a file it reaches changes, and only then: editing the results
page's table code re-executes Results (and what reads it), not the nineteen pages. The
files are found statically, without importing anything:

- a template's code cells name what they call (``report.results_table``,
  ``from vptlib.study import tuning``); a name re-exported by a package's ``__init__``
  (``vptlib.report``) resolves to the module that defines it;
- from there, every import in a reached module counts, including those inside functions
  (the lazy imports), so what a page reaches at run time is a subset of what is listed.

Importing a package (``from vptlib import report``) in a module, not in a template,
reaches the whole package: conservative, never a page left stale.

``python -m vptlib.study.page_sources OUT TEMPLATE...`` writes the Makefile fragment that
``make book`` includes: ``PAGE_SRC_<template> := <files>`` per template.
"""

from __future__ import annotations

import ast
import json
import sys
from functools import cache
from pathlib import Path

from vptlib import PACKAGE, REPO, atomic


def module_file(module: str) -> Path | None:
    """``vptlib.report.results`` → its file (a package: its ``__init__.py``); None outside vptlib."""
    parts = module.split(".")
    if parts[0] != "vptlib":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(file: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = _module_name(file).split(".")
    if file.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def _reexports(package: str) -> dict[str, str]:
    """A package ``__init__``'s names imported from its submodules: name → defining module."""
    file = module_file(package)
    if file is None or file.name != "__init__.py":
        return {}
    out = {}
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            source = _absolute(file, node)
            for alias in node.names:
                out[alias.asname or alias.name] = source
    return out


def _resolve(package: str, name: str) -> str:
    """``from package import name``: the module ``name`` is, or the one that defines it."""
    if module_file(f"{package}.{name}") is not None:
        return f"{package}.{name}"
    return _reexports(package).get(name, package)


@cache
def imports_of(file: Path) -> frozenset[str]:
    """Every vptlib module ``file`` imports, anywhere in it (a re-exported name: its definer).

    A package ``__init__`` that only re-exports a name (``vptlib.report``'s page functions)
    does not depend on it: a page reaches that name's module through its own use of it.
    Names the ``__init__`` itself uses (a registry built from them) are dependencies.
    """
    tree = ast.parse(file.read_text(encoding="utf-8"))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vptlib")}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(file, node)
            if not source.startswith("vptlib"):
                continue
            for alias in node.names:
                if file.name == "__init__.py" and node in tree.body and (alias.asname or alias.name) not in used:
                    continue  # re-exported only
                found.add(_resolve(source, alias.name))
    return frozenset(m for m in found if module_file(m) is not None)


def closure(modules: set[str]) -> set[Path]:
    """The files of ``modules`` and of everything they import, transitively; every
    package ``__init__`` above them included (Python executes it first)."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo += imports_of(module_file(module))
        todo += [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
    return {module_file(m) for m in seen}


def template_modules(template: str | Path) -> set[str]:
    """The vptlib modules a template's code cells call into (``report.x`` → x's module)."""
    cells = json.loads(Path(template).read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    packages: dict[str, str] = {}  # a local name bound to a vptlib package, e.g. report → vptlib.report
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vptlib")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vptlib"):
            for alias in node.names:
                target = _resolve(node.module, alias.name)
                if module_file(target) is not None and module_file(target).name == "__init__.py":
                    packages[alias.asname or alias.name] = target
                found.add(target)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in packages:
            found.add(_resolve(packages[node.value.id], node.attr))
    return {m for m in found if module_file(m) is not None}


def page_sources(template: str | Path) -> list[str]:
    """The repository-relative vptlib files that make ``template``'s page, sorted."""
    return sorted(p.relative_to(REPO).as_posix() for p in closure(template_modules(template)))


def makefile_fragment(templates: list[str | Path]) -> str:
    lines = ["# Written by python -m vptlib.study.page_sources: each page's vptlib files (do not edit)."]
    for template in templates:
        lines.append(f"PAGE_SRC_{Path(template).stem} := {' '.join(page_sources(template))}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    out, *templates = argv if argv is not None else sys.argv[1:]
    atomic.write_text(out, makefile_fragment(templates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
