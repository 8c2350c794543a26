"""sha256 of a file in fixed-size chunks: memory stays flat whatever the file's size."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of ``path``'s bytes, read 1 MiB at a time."""
    return sha256_digest(path).hex()


def sha256_digest(path: str | Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.digest()
