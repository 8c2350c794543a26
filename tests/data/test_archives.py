"""``vptlib data fetch --archive``: an explicit archive is never ignored, and an archive is
bounded before anything is unpacked (issue 43)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vptlib.data import fetch as kaggle
from vptlib.errors import UserError


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _dataset(tag: bytes) -> dict[str, bytes]:
    return {f"{s}/glioma/{s[:2]}-gl_0001.jpg": tag + s.encode() for s in ("Training", "Testing")}


def test_an_explicit_archive_replaces_the_data_set_vptlib_wrote(tmp_path):
    dest = tmp_path / "k"
    kaggle.fetch(dest, archive=_zip(tmp_path / "old.zip", _dataset(b"old")))
    kaggle.fetch(dest, archive=_zip(tmp_path / "new.zip", _dataset(b"new")))
    assert json.loads((dest / kaggle.SOURCE_FILE).read_text())["handle"] == "manual: new.zip"
    assert (dest / "Training/glioma/Tr-gl_0001.jpg").read_bytes() == b"newTraining"


def test_an_explicit_archive_never_overwrites_a_folder_vptlib_did_not_write(tmp_path):
    dest = tmp_path / "k"
    for s in ("Training", "Testing"):
        (dest / s).mkdir(parents=True)
        (dest / s / "mine.jpg").write_bytes(b"mine")
    with pytest.raises(UserError, match=f"--dest {dest} already holds files that vptlib did not write; nothing"):
        kaggle.fetch(dest, archive=_zip(tmp_path / "new.zip", _dataset(b"new")))
    assert (dest / "Training/mine.jpg").read_bytes() == b"mine"


def test_a_zip_bomb_is_refused_from_its_declared_sizes(tmp_path):
    """A member declaring 300 MB (a 0.3 MB zip) is refused before a byte is unpacked."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Training/glioma/a.jpg", b"x")
        with z.open("Testing/glioma/big.jpg", "w", force_zip64=True) as f:
            zeros = bytes(1 << 20)
            for _ in range(300):
                f.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(
        UserError, match=r"declares 'Testing/glioma/big.jpg' of 300 MiB \(at most 256 MiB a file\); nothing"
    ):
        kaggle.fetch(tmp_path / "k", archive=bomb)
    assert not (tmp_path / "k").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".k.")]


def test_an_archive_larger_than_the_bound_or_the_disk_is_refused(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "a.zip", {**_dataset(b"x"), "Training/glioma/pad.jpg": bytes(5000)})
    monkeypatch.setattr(kaggle, "MAX_ARCHIVE_BYTES", 4096)
    with pytest.raises(UserError, match=r"GiB in all \(at most 0 GiB\)"):
        kaggle.fetch(tmp_path / "k", archive=archive)


def test_a_member_larger_than_it_declares_is_refused_not_a_traceback(tmp_path):
    """A header that understates a member's size: the stream stops at the declared size."""
    archive = _zip(tmp_path / "a.zip", _dataset(b"x" * 100))
    data = bytearray(archive.read_bytes())
    # Rewrite every declared uncompressed size of 102 (local headers and the central directory) to 10.
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        while at >= 0:
            if struct.unpack_from("<I", data, at + offset)[0] == 108:
                struct.pack_into("<I", data, at + offset, 10)
            at = data.find(sig, at + 4)
    archive.write_bytes(bytes(data))
    res = subprocess.run(
        [sys.executable, "-m", "vptlib", "data", "fetch", "--archive", str(archive), "--dest", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "is damaged" in res.stderr or "more than the size it declares" in res.stderr
    assert not (tmp_path / "k").exists()
