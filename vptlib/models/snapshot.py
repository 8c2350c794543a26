"""``vptlib model fetch``: a hub snapshot as a plain folder to copy to an air-gapped machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vptlib.atomic import atomic_dir
from vptlib.errors import UserError

from .hub import PINNED, SOURCE_FILE, TEXT_FILES, endpoint, file_sha256, resolve


def fetch(repo: str, revision: str | None, out: str | Path) -> Path:
    """``vptlib model fetch``: the files of ``repo`` at ``revision`` as a plain folder to copy to
    an air-gapped machine, with ``source.json`` (repo, revision, commit, each file's sha256)."""
    out = Path(out)
    src = resolve(repo, revision)
    if src.repo is None:
        raise UserError(f"--model {repo} is a local folder; model fetch takes a hub id ({', '.join(PINNED)})")
    # The text files, and the one weights file the model loads from (the first of WEIGHTS it has).
    files = [f for f in TEXT_FILES if (src.folder / f).is_file()]
    files += [src.weights.name] if src.weights is not None else []
    with atomic_dir(out) as tmp:
        for f in files:
            shutil.copyfile(src.folder / f, tmp / f)  # the cache holds links to blobs: copy the bytes
        meta = {
            "repo": src.repo,
            "revision": src.revision,
            "commit": src.commit,
            "endpoint": endpoint(),
            "files": {f: file_sha256(tmp / f) for f in files},
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
