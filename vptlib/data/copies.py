"""One definition of a copy, used by ``prepare``, ``data audit`` and the Dataset page's audit.

The Kaggle brain-MRI set pools three collections and holds the same slice many times:
byte-identical, re-encoded, mirrored, re-windowed (another contrast), slightly shifted or
cropped. Measured on the real images, three quarters of its official Testing folder are
such copies of Training images. Two images are **copies** here when one of these holds:

* **exact**: the same file bytes (sha256);
* **near** or **mirrored**: their 64x64 grey thumbnails (bicubic), mean-centred, have a
  cosine of at least :data:`SIMILAR`, as they are or with one flipped left to right. The
  cosine of mean-centred images ignores brightness and contrast (any ``a x + b``), and a
  gamma between 0.6 and 1.6 keeps it above 0.95 on the real images, so most re-windowed
  copies match here; they are called **re-windowed** when their grey levels still differ by
  more than :data:`REWINDOW_GREY` on average;
* **re-windowed**: the thumbnails after histogram equalisation (which undoes any monotone
  change of grey levels) have a cosine of at least :data:`EQUALISED`, as they are or mirrored;
* **shifted**: for pairs at :data:`CANDIDATE` or more (as they are, or one centre-cropped by
  :data:`CROP`), one thumbnail shifted by up to one pixel (1/64 of the image) each way, or
  centre-cropped by :data:`CROP` and resized, and the border pixel trimmed, reaches
  :data:`ALIGNED`.

Copies are an undirected relation; its connected components are **copy clusters**
(:func:`clusters`). A split that keeps a cluster whole keeps every copy on one side.

Why these thresholds (measured by ``vptlib data audit`` on the 7,019 real images, README):
distinct slices of the same anatomy reach 0.95-0.96 as they are (a glioma and a meningioma
slice at 0.964), so :data:`SIMILAR` sits just below the 0.95 at which the independent check
calls a pair a copy; equalisation lifts distinct slices too (1,521 extra pairs at 0.95, 265 of
them below 0.9 as they are), none at :data:`EQUALISED`; and a shift makes distinct slices
align better, so :data:`ALIGNED` is stricter still.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps

from vptlib.hashing import sha256_file  # noqa: F401 - re-exported: the copy rule's exact test

THUMB = 64  # thumbnail side, pixels
SIMILAR = 0.94  # cosine as is or mirrored: a copy
EQUALISED = 0.97  # cosine after histogram equalisation: a re-windowed copy
ALIGNED = 0.97  # cosine after a shift of up to one thumbnail pixel or a CROP crop: a shifted copy
CANDIDATE = 0.8  # shifts and crops are tried only for pairs at this cosine or more
CROP = 0.05  # centre crop (share of each side) tried for shifted copies
REWINDOW_GREY = 8.0  # mean absolute grey-level difference (of 255) above which a near copy is re-windowed
KINDS = ("exact", "near", "mirrored", "re-windowed", "shifted")
# Rows compared at once: memory is BLOCK x n floats per matrix, never n x n.
BLOCK = 1024


def _bits_to_int(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits.ravel()), 2)


def dhash(img: Image.Image) -> int:
    """64-bit difference hash (``imagehash.dhash``), kept in the manifest for scripts."""
    return _bits_to_int(imagehash.dhash(img).hash)


def phash(img: Image.Image) -> int:
    """64-bit DCT hash (``imagehash.phash``), kept in the manifest for scripts."""
    return _bits_to_int(imagehash.phash(img).hash)


@dataclass(frozen=True)
class Signature:
    """What the copy rules compare of one image: three 64x64 grey thumbnails (uint8)."""

    grey: np.ndarray  # the image as it is
    equalised: np.ndarray  # histogram-equalised
    cropped: np.ndarray  # centre-cropped by CROP

    @classmethod
    def of(cls, img: Image.Image) -> Signature:
        g = img.convert("L")
        small = g.resize((THUMB, THUMB), Image.Resampling.BICUBIC)
        w, h = g.size
        dx, dy = round(w * CROP / 2), round(h * CROP / 2)
        crop = g.crop((dx, dy, w - dx, h - dy)).resize((THUMB, THUMB), Image.Resampling.BICUBIC)
        return cls(np.asarray(small), np.asarray(ImageOps.equalize(small)), np.asarray(crop))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows flattened, mean-centred and scaled to unit norm: their dot product is a cosine."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    x = x - x.mean(1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def _flip(x: np.ndarray) -> np.ndarray:
    return x[:, :, ::-1]


@dataclass(frozen=True)
class CopyPair:
    a: int  # row index of one image
    b: int  # row index of the other (a < b)
    kind: str  # one of KINDS
    similarity: float  # the cosine that matched (1.0 for exact)
    transform: str  # what matched: "as is", "mirrored", "equalised", "shift (1, 0)", ...


def _blocked_hits(x: np.ndarray, threshold: float, right: np.ndarray | None = None):
    """Every pair (i, j) whose cosine, as is or with j mirrored, is at least ``threshold``:
    yields (i, j, cosine, mirrored?). Rows of ``x`` against rows of ``right`` (then every
    i != j), or of ``x`` itself (then i < j)."""
    u = unit(x)
    r = u if right is None else unit(right)
    m = unit(_flip(x if right is None else right))
    n = len(u)
    for start in range(0, n, BLOCK):
        idx = np.arange(start, min(start + BLOCK, n))
        plain, flipped = u[idx] @ r.T, u[idx] @ m.T  # (block, n)
        best = np.maximum(plain, flipped)
        for bi, j in zip(*np.nonzero(best >= threshold), strict=True):
            i = int(idx[bi])
            if i < j or (right is not None and i != j):
                yield i, int(j), float(best[bi, j]), bool(flipped[bi, j] > plain[bi, j])


def _shift_variants(img: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A thumbnail shifted by up to one pixel each way, as it is and mirrored, border trimmed."""
    out, names = [], []
    for flip in (False, True):
        g = img[:, ::-1] if flip else img
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                out.append(np.roll(g, (dy, dx), axis=(0, 1))[1:-1, 1:-1])
                parts = (["mirrored"] if flip else []) + ([f"shift ({dx}, {dy})"] if (dx, dy) != (0, 0) else [])
                names.append(" + ".join(parts) or "as is")
    return np.stack(out), names


def find_copies(sha256: list[str], sigs: list[Signature]) -> list[CopyPair]:
    """Every pair of rows that are copies by the module's rules, strongest kind first:
    exact, then near/mirrored (re-windowed when their grey levels differ), then re-windowed
    through equalisation, then shifted. Sorted by (a, b)."""
    n = len(sigs)
    if n < 2:
        return []
    found: dict[tuple[int, int], CopyPair] = {}
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(sha256):
        by_hash.setdefault(h, []).append(i)
    for rows in by_hash.values():
        for k, i in enumerate(rows):
            for j in rows[k + 1 :]:
                found[(i, j)] = CopyPair(i, j, "exact", 1.0, "same bytes")
    grey = np.stack([s.grey for s in sigs]).astype(np.float32)  # (n, 64, 64)
    for i, j, cos, flipped in _blocked_hits(grey, SIMILAR):
        if (i, j) in found:
            continue
        other = grey[j][:, ::-1] if flipped else grey[j]
        rewindowed = float(np.abs(grey[i] - other).mean()) > REWINDOW_GREY
        kind = "re-windowed" if rewindowed else ("mirrored" if flipped else "near")
        found[(i, j)] = CopyPair(i, j, kind, cos, "mirrored" if flipped else "as is")
    eq = np.stack([s.equalised for s in sigs]).astype(np.float32)
    for i, j, cos, flipped in _blocked_hits(eq, EQUALISED):
        if (i, j) not in found:
            found[(i, j)] = CopyPair(i, j, "re-windowed", cos, "equalised" + (" + mirrored" if flipped else ""))
    found.update(_shifted(grey, np.stack([s.cropped for s in sigs]).astype(np.float32), found))
    return [found[k] for k in sorted(found)]


def _shifted(grey: np.ndarray, cropped: np.ndarray, found: dict) -> dict[tuple[int, int], CopyPair]:
    """Pairs at CANDIDATE or more, as they are or one cropped, that a one-pixel shift or a
    CROP crop lifts to ALIGNED."""
    candidates: dict[int, set[int]] = {}
    hits = [(i, j) for i, j, _, _ in _blocked_hits(grey, CANDIDATE)]
    hits += [(i, j) for i, j, _, _ in _blocked_hits(cropped, CANDIDATE, right=grey)]
    for i, j in hits:
        if (min(i, j), max(i, j)) not in found:
            candidates.setdefault(i, set()).add(j)
            candidates.setdefault(j, set()).add(i)
    if not candidates:
        return {}
    base = unit(grey[:, 1:-1, 1:-1])  # (n, 62*62): the other image, border trimmed
    out: dict[tuple[int, int], CopyPair] = {}
    for i, near in candidates.items():
        js = sorted(near)
        # Both of i's thumbnails (as is and its crop), shifted and mirrored, against each candidate j.
        shifted, names = _shift_variants(grey[i])
        shifted_c, names_c = _shift_variants(cropped[i])
        variants = unit(np.concatenate([shifted, shifted_c]))  # (36, 62*62)
        labels = names + [f"crop {CROP:.0%}" + ("" if s == "as is" else f" + {s}") for s in names_c]
        sims = variants @ base[js].T  # (36, len(js))
        best = sims.argmax(0)
        for col, j in enumerate(js):
            cos = float(sims[best[col], col])
            key = (min(i, j), max(i, j))
            if cos >= ALIGNED and (key not in out or out[key].similarity < cos):
                out[key] = CopyPair(*key, "shifted", cos, labels[best[col]])
    return out


def clusters(n: int, pairs: list[CopyPair]) -> np.ndarray:
    """The copy cluster of each of ``n`` rows: connected components of the copy relation,
    numbered by their first row (so the numbering does not depend on the pairs' order)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        ra, rb = root(p.a), root(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])
