"""``vptlib data fetch``: download the Kaggle brain-MRI dataset when a network allows.

Offline it stops within seconds and says where a manual download goes and which
``prepare`` command comes next.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from .errors import UserError

KAGGLE_DATASET = "masoudnickparvar/brain-tumor-mri-dataset"
_KAGGLE_HOST = ("www.kaggle.com", 443)


def _reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def manual_instructions(dest: Path) -> str:
    return (
        f"Download https://www.kaggle.com/datasets/{KAGGLE_DATASET} by hand (a zip with "
        f"Training/ and Testing/), unzip it to {dest} so that {dest}/Training/glioma/ exists, then run:\n"
        f"  vptlib data prepare --source {dest} --out data/brain-mri"
    )


def fetch(dest: str | Path = "data/kaggle-brain-mri") -> Path:
    """Download with kagglehub and copy to ``dest``; a :class:`UserError` when offline."""
    dest = Path(dest)
    if (dest / "Training").is_dir() and (dest / "Testing").is_dir():
        return dest
    if os.environ.get("VPTLIB_OFFLINE") == "1" or not _reachable(_KAGGLE_HOST):
        raise UserError("Kaggle is unreachable from this machine. " + manual_instructions(dest))
    try:
        import kagglehub

        path = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as exc:  # kagglehub raises many types; the user needs the message only
        raise UserError(
            f"kagglehub download failed ({type(exc).__name__}: {exc}). " + manual_instructions(dest)
        ) from None
    root = next((p.parent for p in path.rglob("Training") if (p.parent / "Testing").is_dir()), None)
    if root is None:
        raise UserError(f"downloaded {path} has no Training/ and Testing/ folders. " + manual_instructions(dest))
    from .atomic import atomic_dir

    with atomic_dir(dest) as tmp:  # a killed copy leaves no partial dataset behind
        shutil.copytree(root, tmp, dirs_exist_ok=True)
    return dest
