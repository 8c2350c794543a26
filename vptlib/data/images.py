"""Decode one image file into RGB, defensively.

Real collections contain truncated JPEGs, empty files, text files named ``.jpg``,
CMYK/16-bit/palette/alpha images, EXIF-rotated phone photos and the occasional
decompression bomb. :func:`load_rgb` turns each of these into either an RGB image
plus a note on what was converted, or a :class:`BadImage` whose message says why
the file cannot be used. Callers report the path; nothing is dropped silently.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# Brain MRI slices are at most a few thousand pixels a side; 40 MP is already absurd.
# PIL's own limit (~179 MP before an error) is far too generous for 24 GiB machines
# that decode in parallel.
MAX_PIXELS = 40_000_000
# Slices are near square (the Kaggle set's most elongated are about 2:1). A 1x40000 strip
# is a few KB on disk but, resized so its short side is 224, tens of GB in memory.
MAX_ASPECT = 8.0
MIN_SIDE = 16


class BadImage(Exception):
    """The file cannot be used; ``str(exc)`` is a short reason for the report."""


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    mode = img.mode
    if mode == "RGB":
        return img, ""
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float scans: stretch the occupied range to 8 bits rather than
        # dividing by 256, which would leave 12-bit MRI nearly black.
        arr = np.asarray(img, dtype=np.float64)
        bad = int((~np.isfinite(arr)).sum())
        if bad:  # NaN or inf: no windowing can show them, and min/max would turn every pixel to NaN
            raise BadImage(f"{bad:,} of {arr.size:,} pixels are NaN or infinite ({mode} image)")
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB"), f"{mode}->RGB"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # MRI background is black: composite transparent pixels onto black.
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB"), f"{mode}(alpha)->RGB"
    return img.convert("RGB"), f"{mode}->RGB"


def load_rgb(path: str | Path) -> tuple[Image.Image, str, str]:
    """Decode ``path`` to a fully loaded RGB image.

    Returns ``(image, original_mode, note)`` where ``note`` lists the conversions
    applied (EXIF rotation, mode changes) and is empty for a plain RGB file.
    Raises :class:`BadImage`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror}") from None
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                # The header is read; check the size before any pixels are decoded.
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"too large ({w}x{h} pixels): possible decompression bomb")
                if min(w, h) < MIN_SIDE:
                    raise BadImage(f"too small ({w}x{h} pixels; a side under {MIN_SIDE})")
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise BadImage(f"extreme aspect ratio ({w}x{h}; more than {MAX_ASPECT:g}:1)")
                img.load()
                mode = img.mode
                rotated = ImageOps.exif_transpose(img)
                if rotated is not None and rotated.size != img.size or _orientation(img) > 1:
                    notes.append("EXIF rotation applied")
                img = rotated if rotated is not None else img
                rgb, note = _to_rgb(img)
                if note:
                    notes.append(note)
                rgb.load()
                return rgb, mode, "; ".join(notes)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("too large: possible decompression bomb") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"corrupt or truncated image ({exc})") from None


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block must not reject the pixels
        return 1


def is_hidden(path: Path) -> bool:
    """Dot-files and macOS resource forks (``._x.jpg``) are never images of the study."""
    return path.name.startswith(".")
