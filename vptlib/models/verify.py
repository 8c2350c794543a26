"""Weights are used only when they are the bytes their source says they are.

Three sources vouch for a weights file, and each is checked wherever it applies:

* **the hub**: an LFS file's sha256 is its ``X-Linked-Etag``, and huggingface_hub names the
  cache blob after it (``blobs/<sha256>``). ``hf_hub_download`` checks only the size, so a
  mirror or proxy that serves other bytes of the same size would otherwise leave a blob whose
  name promises one content and whose bytes are another, read by every later offline run;
* **this code**: :data:`PINNED_WEIGHTS` holds the sha256 of the default models' weights at their
  pinned commits, so a mirror that lies consistently (headers and bytes) is caught too;
* **source.json**: ``vptlib model fetch`` lists each file's sha256 for the air-gapped route;
  a copied folder is checked against its own list before it is used.

Each file is hashed once per process (:func:`file_sha256`); the run
record's weights sha256 is that same hash, so a record can only name verified bytes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from vptlib.errors import UserError
from vptlib.hashing import sha256_file

# sha256 of the weights at the commits this project pins (the hub's LFS oids, read off
# huggingface.co's file pages and matched by independent records of the same files).
PINNED_WEIGHTS: dict[tuple[str, str, str], str] = {
    ("openai/clip-vit-base-patch32", "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268", "pytorch_model.bin"): (
        "a63082132ba4f97a80bea76823f544493bffa8082296d62d71581a4feff1576f"
    ),
    (
        "flaviagiammarino/pubmed-clip-vit-base-patch32",
        "26c0c67f6da303ad2a38909130bd35744ea93517",
        "pytorch_model.bin",
    ): ("4daa7650d2b47e55c37b5ca7dcabe826fd82407c26028a574bcc422f35a94aa4"),
}
# A JSON file {"repo@commit/file": sha256, ...} whose entries replace the pins above: for an
# organisation's mirror that re-hosts a repo at the same commit with other weights, and for the
# tests' hub stand-in (random weights at the real commits). Setting it is a deliberate act.
PINS_ENV = "VPTLIB_WEIGHT_PINS"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for an unchanged file."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(path)  # the project's one chunked hasher
    return _SHA256[key]


def pinned(repo: str | None, commit: str | None, name: str) -> str | None:
    """The sha256 pinned for ``name`` of ``repo`` at ``commit``, if any."""
    if not repo or not commit:
        return None
    extra = os.environ.get(PINS_ENV)
    if extra:
        try:
            pins = json.loads(Path(extra).read_text())
        except (OSError, ValueError):
            raise UserError(f"{PINS_ENV}={extra} is not a readable JSON file of pins") from None
        if f"{repo}@{commit}/{name}" in pins:
            return str(pins[f"{repo}@{commit}/{name}"])
    return PINNED_WEIGHTS.get((repo, commit, name))


def expected(path: Path, repo: str | None, commit: str | None) -> list[tuple[str, str]]:
    """What vouches for ``path``'s bytes: (who, sha256) pairs."""
    claims = []
    blob = path.resolve()
    if path.is_symlink() and blob.parent.name == "blobs" and SHA256.match(blob.name):
        claims.append(("the hub's listed sha256 (the cache blob's name)", blob.name))
    pin = pinned(repo, commit, path.name)
    if pin:
        claims.append((f"the sha256 vptlib pins for {repo} at {commit[:12]}", pin))  # type: ignore[index]
    return claims


def check_weights(path: Path, repo: str | None, commit: str | None, remove_bad: bool) -> None:
    """Refuse ``path`` unless its sha256 is every sha256 that vouches for it. With
    ``remove_bad`` (a download or a hub-cache file), the bad bytes are deleted so that the next
    attempt downloads them again instead of reading them."""
    claims = expected(path, repo, commit)
    if not claims:
        return
    actual = file_sha256(path)
    for who, sha in claims:
        if actual != sha:
            removed = ""
            if remove_bad:
                blob = path.resolve()
                path.unlink(missing_ok=True)
                if blob != path:
                    blob.unlink(missing_ok=True)
                removed = " They were deleted; run the command again to download them afresh, or use another mirror."
            raise UserError(
                f"{path.name} of {repo or path.parent} has sha256 {actual[:16]}…, not {sha[:16]}… ({who}): the "
                f"server or the copy gave other bytes than the hub lists.{removed}"
            )


def check_listed(folder: Path, listed: dict[str, str], source: Path) -> None:
    """Every file ``source.json`` lists must be in ``folder`` with the sha256 it lists."""
    for name, sha in sorted(listed.items()):
        f = folder / name
        if not f.is_file():
            raise UserError(f"{f} is missing; {source} lists it. Copy the folder again (vptlib model fetch)")
        if file_sha256(f) != sha:
            raise UserError(
                f"{f} is not the file {source} lists (sha256 {file_sha256(f)[:16]}…, listed {sha[:16]}…): "
                f"the copy is damaged. Copy the folder again, or fetch it anew (vptlib model fetch)"
            )
