"""Every kind of bad file is reported with its path; convertible ones are converted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vptlib.data.images import BadImage, load_rgb
from vptlib.data.prepare import PrepareOptions, prepare


def _plant(folder: Path, good: Path) -> dict[str, str]:
    """Write one file of each awkward kind; returns name -> expected outcome."""
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a JPEG\n")
    (folder / ".hidden.jpg").write_bytes(data)
    (folder / "._resource_fork.jpg").write_bytes(b"\x00\x05\x16\x07")
    (folder / "readme.txt").write_text("hello")
    Image.new("L", (8000, 6000)).save(folder / "bomb.png")
    gray = np.asarray(Image.open(good).convert("L"))
    Image.fromarray(gray).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(gray.astype(np.uint16) * 16).save(folder / "deep16.png")
    Image.fromarray(gray).convert("RGB").quantize(64).save(folder / "palette.png")
    rgba = Image.fromarray(gray).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "alpha.png")
    rot = Image.fromarray(gray[:, : gray.shape[1] // 2]).convert("RGB")  # portrait 128x64 (h x w)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rot.save(folder / "exif_rotated.jpg", exif=exif)
    Image.fromarray(np.full((128, 128), np.nan, np.float32), mode="F").save(folder / "all_nan.tif")
    inf = gray.astype(np.float32)
    inf[10, 10] = np.inf
    Image.fromarray(inf, mode="F").save(folder / "one_inf.tif")
    return {
        "all_nan.tif": "pixels are NaN or infinite",
        "one_inf.tif": "1 of",
        "truncated.jpg": "corrupt or truncated",
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
        ".hidden.jpg": "hidden file",
        "._resource_fork.jpg": "hidden file",
        "readme.txt": "not an image extension",
        "bomb.png": "decompression bomb",
    }


@pytest.fixture(scope="module")
def messy(phantom_source, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    src = tmp_path_factory.mktemp("messy")
    shutil.copytree(phantom_source, src, dirs_exist_ok=True)
    folder = src / "Training" / "glioma"
    good = sorted(folder.glob("*.jpg"))
    expected = _plant(folder, good[0])
    for p in good[:5]:  # five convertible images replace five phantoms: 40 usable in all
        p.unlink()
    out = tmp_path_factory.mktemp("messy-out")
    # The converted files are all made from one slice: near duplicates of each other, kept here
    # (this is about decoding; tests/data/test_dedup.py covers duplicate-free drawing).
    prepare(PrepareOptions(src, out, train_per_class=40, test_per_class=5, keep_duplicates=True))
    return src, out, expected


def test_every_bad_file_is_reported_with_its_reason(messy):
    _, out, expected = messy
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    skipped = df[df.split == "skipped"].set_index("source")
    for name, reason in expected.items():
        assert f"Training/glioma/{name}" in skipped.index, name
        assert reason in skipped.loc[f"Training/glioma/{name}", "note"], name
    assert len(skipped) == len(expected)


def test_convertible_images_are_kept_and_noted(messy):
    _, out, _ = messy
    df = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).set_index("source")
    assert df.loc["Training/glioma/cmyk.jpg", "mode"] == "CMYK"
    assert "CMYK->RGB" in df.loc["Training/glioma/cmyk.jpg", "note"]
    assert "I;16" in df.loc["Training/glioma/deep16.png", "note"]
    assert "P->RGB" in df.loc["Training/glioma/palette.png", "note"]
    assert "alpha" in df.loc["Training/glioma/alpha.png", "note"]
    row = df.loc["Training/glioma/exif_rotated.jpg"]
    assert "EXIF rotation" in row.note
    assert (row.width, row.height) == ("128", "64")  # stored 64 wide, displayed 128 wide


def test_load_rgb_always_returns_rgb(messy):
    src, _, _ = messy
    for name in ("cmyk.jpg", "deep16.png", "palette.png", "alpha.png", "exif_rotated.jpg"):
        img, _, _ = load_rgb(src / "Training" / "glioma" / name)
        assert img.mode == "RGB"
        assert np.asarray(img).max() > 0, name  # 16-bit stretched, not crushed to black


def test_sixteen_bit_is_stretched(tmp_path):
    arr = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit MRI range
    Image.fromarray(arr).save(tmp_path / "x.png")
    img, mode, _ = load_rgb(tmp_path / "x.png")
    assert mode.startswith("I")
    assert np.asarray(img).max() == 255 and np.asarray(img).min() == 0


@pytest.mark.parametrize("content", [b"", b"GIF89a-not-really", b"\xff\xd8\xff\xe0garbage"])
def test_bad_bytes_raise_badimage(tmp_path, content):
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(BadImage):
        load_rgb(tmp_path / "x.jpg")
