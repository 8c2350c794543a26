"""Exact and near-duplicate detection: sha256 of the file bytes plus two perceptual hashes.

The Kaggle brain-MRI set pools three sources and is known to hold exact and
near-duplicate slices, some across its Training/Testing folders. A near duplicate
here means that both the difference hash (dHash) and the DCT hash (pHash) of two
images are within ``max_distance`` bits of 64 *and* their 32x32 grey thumbnails
correlate at ``min_corr`` or more. Axial brain slices all look alike at 8x8, so the
hashes alone flag distinct slices (measured on phantoms: distinct pairs at 4-6 bits,
thumbnail correlation up to 0.964, with the hand-written pHash that imagehash's
replaced: the two differ by 0.3 bits on average); re-encoded or rescaled copies sit at 0-1 bits and
correlation >= 0.999. A **mirrored** copy (a left-right flip, which training
augmentation also makes, so a flipped copy across splits is leakage) is a near duplicate
of the flipped image: the same rules applied to the candidate's mirror image. Crops and
shifts of the same slice are not duplicates by these rules; the nearest-neighbour audit
(:func:`vptlib.study.leakage.nearest_training`) lists each test image's closest training
image under those transforms instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

NEAR_MAX_DISTANCE = 5
NEAR_MIN_CORR = 0.98


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bits_to_int(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits.ravel()), 2)


def dhash(img: Image.Image) -> int:
    """64-bit difference hash (``imagehash.dhash``): sign of horizontal gradients of a 9x8 thumbnail."""
    return _bits_to_int(imagehash.dhash(img).hash)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash (``imagehash.phash``): the low 8x8 DCT coefficients of a 32x32
    thumbnail against their median."""
    return _bits_to_int(imagehash.phash(img).hash)


def thumbnail(img: Image.Image) -> np.ndarray:
    """Zero-mean, unit-norm 32x32 grey thumbnail; the dot product of two is their correlation."""
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float32).ravel()
    g = g - g.mean()
    return g / (np.linalg.norm(g) + 1e-6)


@dataclass(frozen=True)
class Hashes:
    """What the near-duplicate rules compare: both hashes and the thumbnail of one image."""

    dhash: int
    phash: int
    thumb: np.ndarray

    @classmethod
    def of(cls, img: Image.Image) -> Hashes:
        return cls(dhash(img), phash(img), thumbnail(img))


def mirrored(img: Image.Image) -> Hashes:
    """The hashes of ``img`` flipped left to right (a mirrored copy matches these)."""
    return Hashes.of(ImageOps.mirror(img))


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances of 64-bit hashes, one byte each (popcount of the xor)."""
    return np.bitwise_count(np.bitwise_xor(a[:, None], b[None, :]))


# Rows of the pairwise search compared at once: its memory is BLOCK x n (bytes of distance,
# floats of correlation), not n x n (7,023 images would need 0.2 GB per n x n float matrix).
BLOCK = 1024


class DuplicateIndex:
    """The images chosen so far, to ask of a new one whether it duplicates any of them.

    Same rules as :func:`find_duplicates`: exact (sha256) first, then near (both hashes
    within ``max_distance`` bits and thumbnails correlating at ``min_corr`` or more).
    """

    def __init__(self, max_distance: int = NEAR_MAX_DISTANCE, min_corr: float = NEAR_MIN_CORR):
        self.max_distance, self.min_corr = max_distance, min_corr
        self.names: list[str] = []
        self.sha: dict[str, int] = {}
        # Grown by doubling, so adding an image is amortised O(1) and a query reads the
        # arrays in place (stacking every thumbnail per query made a draw O(n^2) in copies).
        self._d = np.zeros(64, dtype=np.uint64)
        self._p = np.zeros(64, dtype=np.uint64)
        self._thumbs = np.zeros((64, 0), dtype=np.float32)

    def find(
        self, sha: str, dh: int, ph: int, thumb: np.ndarray, mirror: Hashes | None = None
    ) -> tuple[str, str, int] | None:
        """``(name, kind, distance)`` of an image this one duplicates ("exact", "near" or, matched
        through ``mirror``, its flipped image's hashes, "mirror"), or None."""
        if sha in self.sha:
            return self.names[self.sha[sha]], "exact", 0
        if not self.names:
            return None
        hit = self._near(dh, ph, thumb)
        if hit is None and mirror is not None:
            hit = self._near(mirror.dhash, mirror.phash, mirror.thumb)
            return None if hit is None else (hit[0], "mirror", hit[2])
        return hit

    def _near(self, dh: int, ph: int, thumb: np.ndarray) -> tuple[str, str, int] | None:
        n = len(self.names)
        dist = np.maximum(np.bitwise_count(self._d[:n] ^ np.uint64(dh)), np.bitwise_count(self._p[:n] ^ np.uint64(ph)))
        close = np.nonzero(dist <= self.max_distance)[0]  # the hashes first: few pass, so few dot products
        if len(close) == 0:
            return None
        hits = close[self._thumbs[close] @ thumb >= self.min_corr]
        if len(hits) == 0:
            return None
        i = int(hits[np.argmin(dist[hits])])
        return self.names[i], "near", int(dist[i])

    def add(self, name: str, sha: str, dh: int, ph: int, thumb: np.ndarray) -> None:
        n = len(self.names)
        if n == len(self._d) or self._thumbs.shape[1] != thumb.size:
            grow = max(64, 2 * n)
            self._d, self._p = np.resize(self._d, grow), np.resize(self._p, grow)
            thumbs = np.zeros((grow, thumb.size), dtype=np.float32)
            thumbs[:n] = self._thumbs[:n] if self._thumbs.shape[1] == thumb.size else 0
            self._thumbs = thumbs
        self._d[n], self._p[n], self._thumbs[n] = dh, ph, thumb
        self.sha.setdefault(sha, n)
        self.names.append(name)


@dataclass(frozen=True)
class DuplicatePair:
    a: int  # row index of the first image
    b: int  # row index of the second image (a < b)
    kind: str  # "exact", "near" or "mirror"
    distance: int  # max(dHash, pHash) Hamming distance; 0 for exact


def find_duplicates(
    sha256: list[str],
    dhashes: list[int],
    phashes: list[int],
    thumbs: np.ndarray,
    max_distance: int = NEAR_MAX_DISTANCE,
    min_corr: float = NEAR_MIN_CORR,
    mirrors: list[Hashes] | None = None,
) -> list[DuplicatePair]:
    """All pairs of rows that are exact (same bytes), near or (given each row's ``mirrors``)
    mirrored duplicates."""
    n = len(sha256)
    if n < 2:
        return []
    dh, ph = np.array(dhashes, dtype=np.uint64), np.array(phashes, dtype=np.uint64)
    thumbs = np.asarray(thumbs, dtype=np.float32)
    if mirrors is not None:
        m_dh = np.array([m.dhash for m in mirrors], dtype=np.uint64)
        m_ph = np.array([m.phash for m in mirrors], dtype=np.uint64)
        m_thumbs = np.stack([m.thumb for m in mirrors]).astype(np.float32)

    def matches(rows: slice, dh_b, ph_b, thumbs_b) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` against every column: (hit, distance), BLOCK x n."""
        dist = np.maximum(_hamming(dh[rows], dh_b), _hamming(ph[rows], ph_b))
        return (dist <= max_distance) & (thumbs[rows] @ thumbs_b.T >= min_corr), dist

    # Every pair is compared: a 5-bit radius in 64-bit hashes of brain slices, whose distinct
    # pairs already sit at 4-6 bits, leaves a bucketed index (multi-index hashing) with most
    # pairs in its buckets, so it would not beat this. n^2/2 byte popcounts and one matmul:
    # measured by `make bench` (prepare's scaling rows).
    near: dict[tuple[int, int], int] = {}
    flipped: dict[tuple[int, int], int] = {}
    for start in range(0, n, BLOCK):
        rows = slice(start, min(start + BLOCK, n))
        hit, dist = matches(rows, dh, ph, thumbs)
        for i, j in zip(*np.nonzero(hit), strict=True):
            if start + i < j:
                near[(start + int(i), int(j))] = int(dist[i, j])
        if mirrors is None:
            continue
        # (i, j) is a mirror pair when i matches j's mirror or j matches i's: the first is
        # row i against the mirrors, the second the mirror of i against the rows.
        m_hit, m_dist = matches(rows, m_dh, m_ph, m_thumbs)
        dist_t = np.maximum(_hamming(m_dh[rows], dh), _hamming(m_ph[rows], ph))
        hit_t = (dist_t <= max_distance) & (m_thumbs[rows] @ thumbs.T >= min_corr)
        for i, j in zip(*np.nonzero(m_hit | hit_t), strict=True):
            a, b = start + int(i), int(j)
            if a < b and (a, b) not in near:
                flipped[(a, b)] = int(min(m_dist[i, j], dist_t[i, j]))
    pairs = []
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(sha256):
        by_hash.setdefault(h, []).append(i)
    exact = {(i, j) for rows in by_hash.values() for k, i in enumerate(rows) for j in rows[k + 1 :]}
    for i, j in sorted(set(near) | exact | set(flipped)):
        if (i, j) in exact:
            pairs.append(DuplicatePair(i, j, "exact", 0))
        elif (i, j) in near:
            pairs.append(DuplicatePair(i, j, "near", near[(i, j)]))
        else:
            pairs.append(DuplicatePair(i, j, "mirror", flipped[(i, j)]))
    return pairs
