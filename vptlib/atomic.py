"""Atomic writes: a file or a folder is written beside its target under a temporary
name, synced, then renamed onto the target, and the directory is synced too.

A reader (or a resumed run, or ``make``) therefore sees either the old complete
file or folder or the new complete one, never a half-written JSON or a model folder
whose weights are missing after a crash or a SIGKILL. Temporaries carry their writer's
:func:`writer_tag` (host, PID namespace, pid); the next write to the same target removes those
whose writer is gone. A pid means something only on its own host and in its own PID namespace:
on a shared ``runs/`` or ``data/`` (a cluster's array jobs, containers), another host's live
temporary is never touched, whatever its pid would mean here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

# Written into every folder made by :func:`atomic_dir`: proof that vptlib wrote it, so a
# later write may replace it. A folder without it is never deleted.
DIR_MARKER = ".vptlib-written"


def _namespace() -> str:
    """This process's PID namespace (its inode), so two containers on one host differ."""
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def writer_tag() -> str:
    """``host~namespace~pid``: who writes a temporary, unique across hosts and containers."""
    return f"{_host()}~{_namespace()}~{os.getpid()}"


WRITER = re.compile(r"(?P<host>[A-Za-z0-9-]+)~(?P<ns>\d+)~(?P<pid>\d+)")


def writer_gone(tag: str) -> bool:
    """True only for a tag written on this host, in this PID namespace, by a process that is
    no longer alive. Another host's or container's writer (or a tag we cannot read) is
    presumed alive: removing its live temporary would fail its write."""
    m = WRITER.fullmatch(tag)
    if not m or m["host"] != _host() or m["ns"] != _namespace():
        return False
    pid = int(m["pid"])
    return pid != os.getpid() and not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _clean_orphans(target: Path) -> None:
    """Remove temporaries of ``target`` left by writers that died (never a live writer's)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.([^.]+)\.[0-9a-f]+\.(tmp|partial|old|scratch)$")
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        m = pattern.match(p.name)
        if m and writer_gone(m.group(1)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# The failures of a disk, whichever library met them: safetensors and torch report them as
# their own errors (a SafetensorError "IoError(Os { code: 28 ...})", a RuntimeError "file write
# failed"), so the CLI's OSError handler alone would show a traceback.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "the disk reported an I/O error",
    errno.EACCES: "permission is denied",
}


def write_failure(exc: BaseException, path: str | Path) -> UserError | None:
    """The one-line error for a write to ``path`` (the place the user chose) that failed
    because of the disk, or None when ``exc`` is something else."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and not isinstance(exc, (KeyboardInterrupt, SystemExit, UserError)):
        text = str(exc)
        m = re.search(r"\bcode: (\d+)|\[Errno (\d+)\]|os error (\d+)", text)
        if m:
            code = int(next(g for g in m.groups() if g))
        elif "write failed" in text or "No space left" in text:
            code = errno.ENOSPC
    if code not in DISK_ERRORS:
        return None
    return UserError(
        f"cannot write {path}: {DISK_ERRORS[code]} ({os.strerror(code)}); nothing there was changed. "
        f"Free space or choose another folder, then run the same command again"
    )


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(path)
    tmp_path = path.parent / f".{path.name}.{writer_tag()}.{os.urandom(4).hex()}.tmp"
    try:
        write(tmp_path)
        # Give the result the permissions a plain open() would (group-readable under the usual umask).
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if (disk := write_failure(exc, path)) is not None:
            raise disk from None
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``path`` as one unit.

    ``path`` may be absent, empty, or a folder this function wrote before (it carries
    :data:`DIR_MARKER`); anything else is a :class:`UserError` raised before any write.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / DIR_MARKER).is_file())):
        raise UserError(
            f"{path} exists and holds files vptlib did not write; nothing was changed: "
            f"choose a new folder or remove it yourself"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(path)
    tag = f".{path.name}.{writer_tag()}.{os.urandom(4).hex()}"
    tmp, old = path.parent / f"{tag}.partial", path.parent / f"{tag}.old"
    tmp.mkdir()
    try:
        (tmp / DIR_MARKER).write_text("written by vptlib; a later vptlib write may replace this folder\n")
        yield tmp
        mode = 0o666 & ~_umask()
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                os.chmod(f, mode)  # libraries write some files 0600; make them readable like the rest
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, old)  # an empty or vptlib-written folder only (checked above)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        if (disk := write_failure(exc, path)) is not None:
            raise disk from None
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(target: str | Path) -> Iterator[Path]:
    """A working folder beside ``target``, removed on exit; one left by a killed process
    (SIGKILL runs no cleanup) is removed by the next write to ``target``, like every
    temporary here, instead of lingering in the system's temp folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(target)
    tmp = target.parent / f".{target.name}.{writer_tag()}.{os.urandom(4).hex()}.scratch"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        if (disk := write_failure(exc, target)) is not None:
            raise disk from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
