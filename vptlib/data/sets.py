"""A prepared data folder's sets: how ``vptlib data prepare`` replaces its output as one unit.

Each prepare writes a complete new set under ``<out>/.sets/<name>/`` (images, manifest,
duplicates and a marker saying prepare wrote it), then makes it live with one atomic
rename of the ``current`` symlink; ``images``, ``manifest.csv`` and ``duplicates.csv``
point into it. A killed prepare leaves the previous set live. Nothing prepare cannot
prove it wrote is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from vptlib import atomic
from vptlib.errors import UserError

MANIFEST = "manifest.csv"
DUPLICATES = "duplicates.csv"
IMAGES = "images"
SETS = ".sets"  # every prepared set, each in its own folder
CURRENT = "current"  # symlink to the live set: the commit point
SET_MARKER = ".vptlib-set.json"  # in each set: who wrote it, its classes, its manifest's sha256
_LINKED = (IMAGES, MANIFEST, DUPLICATES)  # out/<name> -> current/<name>


def set_info(out: str | Path) -> dict | None:
    """The live set's marker (tool, classes, manifest sha256), or None for a folder prepare did not write."""
    try:
        info = json.loads((Path(out) / CURRENT / SET_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("tool") == "vptlib data prepare" else None


def _ours(path: Path) -> bool:
    """A set folder that carries prepare's marker (a half-written one may have only the marker)."""
    return path.is_dir() and not path.is_symlink() and (path / SET_MARKER).is_file()


def check_ownership(out: Path) -> None:
    """Refuse, before changing anything, when ``out`` holds what prepare cannot prove it wrote."""
    foreign = []
    current = out / CURRENT
    if current.is_symlink() or current.exists():
        target = os.readlink(current) if current.is_symlink() else ""
        if not (Path(target).parent.as_posix() == SETS and _ours(out / target)):
            foreign.append(CURRENT)
    for name in _LINKED:
        p = out / name
        if (p.is_symlink() and os.readlink(p) != f"{CURRENT}/{name}") or (p.exists() and not p.is_symlink()):
            foreign.append(name)
    for name in (".images.old", ".images.partial"):  # an earlier layout's working folders
        if (out / name).exists():
            foreign.append(name)
    sets = out / SETS
    if sets.exists():
        entries = list(sets.iterdir()) if sets.is_dir() and not sets.is_symlink() else [sets]
        foreign += [
            f"{SETS}/{p.name}"
            for p in entries
            if not (_ours(p) or (p.name.endswith(".partial") and p.is_dir() and not any(p.iterdir())))
        ]
    if foreign:
        raise UserError(
            f"--out {out} holds {', '.join(sorted(set(foreign)))} that `vptlib data prepare` did not "
            f"write (or an older version wrote); nothing was changed: choose a new --out, or move "
            f"those away yourself"
        )


def check_apart(source: Path, out: Path) -> None:
    """Neither folder may contain the other, also through symlinks: a re-prepare would delete its own input."""
    if out == source or out.is_relative_to(source):
        raise UserError(f"--out {out} lies inside --source {source}; choose a folder outside it")
    if source.is_relative_to(out):
        raise UserError(
            f"--source {source} lies inside --out {out}; prepare would replace its own input: "
            f"copy the images elsewhere first"
        )


def write_set(
    out: Path,
    files: list[tuple[str, Path]],
    classes: tuple[str, ...],
    source: Path,
    link: bool,
    manifest: bytes,
    duplicates: bytes,
) -> Path:
    """Write a complete new set beside the live one; returns its folder (not yet live).

    ``files`` pairs each image's path inside the set with the source file it copies (or
    links to, with ``link``).
    """
    sets = out / SETS
    sets.mkdir(exist_ok=True)
    _remove_stale(out)  # a killed or failed prepare's set must not fill the disk of every retry
    # The writer's host, PID namespace and pid in the name: a set another host is writing on
    # a shared folder is never mistaken for a dead one of ours.
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.{atomic.writer_tag()}"
    staging = sets / f"{name}.partial"
    staging.mkdir()
    try:
        _fill(staging, files, classes, link, manifest, duplicates)
        _complete(staging, manifest, source, link)
    except BaseException as exc:  # a full disk, Ctrl-C: the live set stays as it was, this one goes
        shutil.rmtree(staging, ignore_errors=True)
        if (disk := atomic.write_failure(exc, out)) is not None:
            raise disk from None
        raise
    final = sets / name
    staging.rename(final)
    atomic.fsync_dir(sets)
    return final


def _fill(staging: Path, files, classes, link: bool, manifest: bytes, duplicates: bytes) -> None:
    marker = {"tool": "vptlib data prepare", "classes": list(classes), "state": "partial"}
    (staging / SET_MARKER).write_text(json.dumps(marker))  # first, so a killed write is provably ours
    for rel, src in files:
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if link:
            os.symlink(src, dest)
        else:
            shutil.copyfile(src, dest)
    atomic.write_bytes(staging / MANIFEST, manifest)
    atomic.write_bytes(staging / DUPLICATES, duplicates)


def _complete(staging: Path, manifest: bytes, source: Path, link: bool) -> None:
    marker = json.loads((staging / SET_MARKER).read_text())
    from .fetch import read_origin

    # origin: the fetched dataset's version and file-list hash (vptlib.data.fetch), where known
    marker.update(
        state="complete",
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        source=str(source),
        link=link,
        origin=read_origin(source),
    )
    atomic.write_json(staging / SET_MARKER, marker)


def _remove_stale(out: Path) -> None:
    """Remove sets of ours that are not live and whose writer is gone: a half-written one of
    a prepare killed mid-copy, or a complete one killed before its commit."""
    live = os.readlink(out / CURRENT) if (out / CURRENT).is_symlink() else None
    for p in (out / SETS).iterdir():
        if f"{SETS}/{p.name}" == live or not (_ours(p) or p.name.endswith(".partial")):
            continue
        tag = p.name.removesuffix(".partial").rpartition(".")[2]
        # An untagged name is an older version's (this one holds --out's lock: none is live).
        if not atomic.WRITER.fullmatch(tag) or atomic.writer_gone(tag):
            shutil.rmtree(p, ignore_errors=True)


def commit(out: Path, new_set: Path) -> None:
    """Make ``new_set`` live with one atomic rename, then remove every other set."""
    tmp = out / f".{CURRENT}.{atomic.writer_tag()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{SETS}/{new_set.name}", tmp)
    os.replace(tmp, out / CURRENT)  # the commit point
    atomic.fsync_dir(out)
    for name in _LINKED:
        link = out / name
        if not link.is_symlink():
            tmp = out / f".{name}.{atomic.writer_tag()}.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(f"{CURRENT}/{name}", tmp)
            os.replace(tmp, link)
    atomic.fsync_dir(out)
    for old in (out / SETS).iterdir():
        if old != new_set and (_ours(old) or old.name.endswith(".partial")):
            shutil.rmtree(old, ignore_errors=True)
