"""A copy of the working tree in which a test runs make (make book, make run, make pdf): shared
by the smoke book's tests and the full profile's dry run, which run on separate workers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(repo: Path, *args: str, timeout: int = 1200, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VPTLIB_OFFLINE": "1", **(env or {})},
    )


def copy_repo(dest: Path) -> Path:
    """A copy of the working tree (tracked and new files), sharing .venv and the tiny models."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)  # keep mtimes so make sees .venv as up to date
    (dest / ".venv").symlink_to(ROOT / ".venv")
    tiny = Path(os.environ.get("VPTLIB_TINY_MODEL", ROOT / "models" / "tiny-clip")).resolve()
    (dest / "models").mkdir()
    shutil.copytree(tiny, dest / "models" / "tiny-clip", copy_function=shutil.copy2)
    # The smoke profile's second backbone, built by make test beside the first.
    shutil.copytree(ROOT / "models" / "tiny-clip-b", dest / "models" / "tiny-clip-b", copy_function=shutil.copy2)
    for p in [*(dest / "models" / "tiny-clip").iterdir(), *(dest / "models" / "tiny-clip-b").iterdir()]:
        os.utime(p)  # newer than their make prerequisites
    return dest


def book_pages(repo: Path) -> list[Path]:
    html = repo / "_build" / "html"
    return [
        p for p in html.rglob("*.html") if p.name not in ("genindex.html", "search.html") and "_static" not in p.parts
    ]
