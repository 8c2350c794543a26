"""``vptlib data fetch``: the Kaggle Brain Tumor MRI Dataset at a pinned version, downloaded
with kagglehub when a network allows, or unpacked from a zip downloaded by hand.

The folder it writes holds ``Training/`` and ``Testing/`` as Kaggle's archive has them, plus
``source.json``: the kagglehub handle and version, the file count per split, and one sha256
over every file's path, size and bytes (:func:`file_list_sha256`). ``prepare`` copies that
record into the prepared set, and the Dataset page shows it. kagglehub downloads a public
dataset without credentials; where Kaggle asks for them the error says how to give them.
Whether Kaggle is reachable is decided by one short request to the endpoint kagglehub uses
(``KAGGLE_API_ENVIRONMENT``), through ``HTTPS_PROXY``/``NO_PROXY`` as every request is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

from vptlib.errors import UserError
from vptlib.hashing import sha256_digest
from vptlib.network import proxy_note
from vptlib.switches import flag

KAGGLE_DATASET = "masoudnickparvar/brain-tumor-mri-dataset"
# Version 1 is the dataset the study describes: 7,023 JPEGs, 5,712 in Training/ and 1,311 in
# Testing/. A later version (2, February 2026) holds other images and is another dataset.
KAGGLE_VERSION = 1
KAGGLE_HANDLE = f"{KAGGLE_DATASET}/versions/{KAGGLE_VERSION}"
EXPECTED_FILES = {"Training": 5712, "Testing": 1311}
SOURCE_FILE = "source.json"
TIMEOUT_S = 5.0
_SPLITS = ("Training", "Testing")
# What an archive may declare before anything is unpacked. Kaggle's version 1 unpacks to
# about 160 MB of JPEGs, none over 1 MB: the bounds leave a wide margin and stop a zip bomb
# (a few MB declaring gigabytes) before it fills memory or the disk.
MAX_ARCHIVE_BYTES = 4 << 30  # all members together
MAX_MEMBER_BYTES = 256 << 20  # any one member
MAX_MEMBERS = 100_000


def manual_instructions(dest: Path, handle: str = KAGGLE_HANDLE) -> str:
    owner_slug, _, version = handle.partition("/versions/")
    return (
        f"Download https://www.kaggle.com/datasets/{owner_slug}/versions/{version or KAGGLE_VERSION} by hand "
        f"(a zip with Training/ and Testing/), then run:\n"
        f"  vptlib data fetch --archive /path/to/archive.zip --dest {dest}\n"
        f"  vptlib data prepare --source {dest} --out data/brain-mri"
    )


def api_endpoint() -> str:
    """The endpoint kagglehub's client sends its requests to."""
    try:
        from kagglesdk.kaggle_env import get_endpoint, get_env

        return get_endpoint(get_env())
    except Exception:  # noqa: BLE001 - an unknown KAGGLE_API_ENVIRONMENT: kagglehub fails the same way later
        return "https://api.kaggle.com"


def unreachable(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """Why ``url`` cannot be reached (one short request, proxies honoured), or None when it answers."""
    import requests

    try:
        requests.head(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return type(exc).__name__
    return None


def fetch(
    dest: str | Path = "data/kaggle-brain-mri", handle: str = KAGGLE_HANDLE, archive: str | Path | None = None
) -> Path:
    """The dataset in ``dest`` (kept if already there); a :class:`UserError` when it cannot be had."""
    dest = Path(dest)
    if archive is not None:  # asked for explicitly: never ignored because dest holds a data set
        return _unpack(Path(archive), dest, {"handle": f"manual: {Path(archive).name}"})
    if all((dest / s).is_dir() for s in _SPLITS):
        return dest
    if flag("VPTLIB_OFFLINE"):
        raise UserError("VPTLIB_OFFLINE=1: no download is tried. " + manual_instructions(dest, handle))
    url = api_endpoint()
    why = unreachable(url)
    if why:
        raise UserError(
            f"Kaggle's API {url} did not answer{proxy_note(url)} within {TIMEOUT_S:.0f} s ({why}); if it is "
            f"reachable only through a proxy, set HTTPS_PROXY. " + manual_instructions(dest, handle)
        )
    try:
        import kagglehub

        path = Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # noqa: BLE001 - kagglehub raises many types; the user needs the message only
        raise UserError(
            f"kagglehub could not download {handle} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}). {_credentials_hint(exc)}"
            + manual_instructions(dest, handle)
        ) from None
    root = find_root(path)
    if root is None:
        raise UserError(
            f"downloaded {path} has no Training/ and Testing/ folders. " + manual_instructions(dest, handle)
        )
    return _copy(
        root,
        dest,
        {
            "handle": handle,
            "version": int(handle.rpartition("/")[2]) if "/versions/" in handle else None,
            "endpoint": url,
        },
    )


def _credentials_hint(exc: Exception) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return (
            "Kaggle asked for credentials: create an API token at https://www.kaggle.com/settings (API, Create "
            "New Token), save it as ~/.kaggle/kaggle.json or set KAGGLE_USERNAME and KAGGLE_KEY, then run the "
            "same command again. "
        )
    return ""


def find_root(path: Path) -> Path | None:
    """The folder holding both ``Training/`` and ``Testing/`` at or below ``path``."""
    if all((path / s).is_dir() for s in _SPLITS):
        return path
    return next((p.parent for p in sorted(path.rglob("Training")) if (p.parent / "Testing").is_dir()), None)


def _unpack(archive: Path, dest: Path, origin: dict[str, Any]) -> Path:
    from vptlib import atomic

    if not zipfile.is_zipfile(archive):
        raise UserError(f"--archive {archive} is not a zip file (Kaggle's download is one)")
    if dest.is_dir() and not (dest / atomic.DIR_MARKER).is_file() and any(dest.iterdir()):
        held = read_origin(dest)
        raise UserError(
            f"--dest {dest} already holds {'a data set from ' + str(held.get('handle')) if held else 'files'} "
            f"that vptlib did not write; nothing was changed: choose another --dest, or remove it yourself"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        members = [m for m in z.infolist() if not m.is_dir()]
        _check_bounds(archive, members, dest.parent)
        with atomic.scratch_dir(dest) as tmp:  # a killed unzip's folder is removed by the next fetch
            for m in members:  # a zip may name ../ paths: nothing is written outside tmp
                if not (tmp / m.filename).resolve().is_relative_to(tmp.resolve()):
                    raise UserError(f"--archive {archive} holds {m.filename!r}, a path outside its folder; refusing it")
            for m in members:
                try:
                    _extract(z, m, tmp, archive)
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    raise UserError(
                        f"--archive {archive} is damaged at {m.filename!r} ({exc}); download it again"
                    ) from None
            root = find_root(tmp)
            if root is None:
                raise UserError(
                    f"--archive {archive} has no Training/ and Testing/ folders. " + manual_instructions(dest)
                )
            return _copy(root, dest, origin)  # replaces a data set vptlib wrote there before


def _check_bounds(archive: Path, members: list[zipfile.ZipInfo], folder: Path) -> None:
    """Refuse an archive whose declared sizes exceed the bounds or the free space (two copies:
    the unpacked scratch folder and the data set)."""
    total = sum(m.file_size for m in members)
    biggest = max(members, key=lambda m: m.file_size, default=None)
    free = shutil.disk_usage(folder).free
    if len(members) > MAX_MEMBERS:
        why = f"{len(members):,} files (at most {MAX_MEMBERS:,})"
    elif biggest is not None and biggest.file_size > MAX_MEMBER_BYTES:
        why = f"{biggest.filename!r} of {biggest.file_size / 2**20:,.0f} MiB (at most {MAX_MEMBER_BYTES >> 20} MiB a file)"
    elif total > MAX_ARCHIVE_BYTES:
        why = f"{total / 2**30:,.1f} GiB in all (at most {MAX_ARCHIVE_BYTES >> 30} GiB)"
    elif 2 * total > free:
        why = f"{total / 2**20:,.0f} MiB, and unpacking needs twice that; {folder} has {free / 2**20:,.0f} MiB free"
    else:
        return
    raise UserError(f"--archive {archive} declares {why}; nothing was unpacked")


def _extract(z: zipfile.ZipFile, m: zipfile.ZipInfo, tmp: Path, archive: Path) -> None:
    """One member, streamed, never more bytes than it declares (a lying header stops here)."""
    out = tmp / m.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with z.open(m) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > m.file_size:
                raise UserError(
                    f"--archive {archive}: {m.filename!r} holds more than the size it declares; refusing it"
                )
            dst.write(chunk)


def _copy(root: Path, dest: Path, origin: dict[str, Any]) -> Path:
    from vptlib.atomic import atomic_dir

    with atomic_dir(dest) as tmp:  # a killed copy leaves no partial dataset behind
        for split in _SPLITS:
            shutil.copytree(root / split, tmp / split)
        counts = {s: sum(1 for p in (tmp / s).rglob("*") if p.is_file()) for s in _SPLITS}
        record = {**origin, "files": counts, "file_list_sha256": file_list_sha256(tmp)}
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if origin.get("handle") == KAGGLE_HANDLE and counts != EXPECTED_FILES:
        print(f"warning: {KAGGLE_HANDLE} should hold {EXPECTED_FILES} files, {dest} holds {counts}")
    return dest


def file_list_sha256(root: Path) -> str:
    """One sha256 over every file under ``Training/`` and ``Testing/``: path, size and bytes."""
    h = hashlib.sha256()
    files = sorted(p for s in _SPLITS for p in (root / s).rglob("*") if p.is_file())
    for p in files:
        h.update(os.fsencode(p.relative_to(root).as_posix()) + b"\0" + str(p.stat().st_size).encode() + b"\0")
        h.update(sha256_digest(p))
    return h.hexdigest()


def read_origin(source: Path) -> dict[str, Any] | None:
    """``source.json`` of a fetched dataset folder, or None (phantoms, a folder copied by hand)."""
    try:
        info = json.loads((Path(source) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
