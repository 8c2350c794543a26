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
    x = np.bitwise_xor(a[:, None], b[None, :])
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


class DuplicateIndex:
    """The images chosen so far, to ask of a new one whether it duplicates any of them.

    Same rules as :func:`find_duplicates`: exact (sha256) first, then near (both hashes
    within ``max_distance`` bits and thumbnails correlating at ``min_corr`` or more).
    """

    def __init__(self, max_distance: int = NEAR_MAX_DISTANCE, min_corr: float = NEAR_MIN_CORR):
        self.max_distance, self.min_corr = max_distance, min_corr
        self.names: list[str] = []
        self.sha: dict[str, int] = {}
        self.d: list[int] = []
        self.p: list[int] = []
        self.thumbs: list[np.ndarray] = []

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
        d = _hamming(np.array([dh], dtype=np.uint64), np.array(self.d, dtype=np.uint64))[0]
        p = _hamming(np.array([ph], dtype=np.uint64), np.array(self.p, dtype=np.uint64))[0]
        dist = np.maximum(d, p)
        corr = np.stack(self.thumbs) @ thumb
        hits = np.nonzero((dist <= self.max_distance) & (corr >= self.min_corr))[0]
        if len(hits) == 0:
            return None
        i = int(hits[np.argmin(dist[hits])])
        return self.names[i], "near", int(dist[i])

    def add(self, name: str, sha: str, dh: int, ph: int, thumb: np.ndarray) -> None:
        self.sha.setdefault(sha, len(self.names))
        self.names.append(name)
        self.d.append(dh)
        self.p.append(ph)
        self.thumbs.append(thumb)


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

    def matches(dh_b: np.ndarray, ph_b: np.ndarray, thumbs_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = np.maximum(_hamming(dh, dh_b), _hamming(ph, ph_b))
        return (dist <= max_distance) & (thumbs @ thumbs_b.T >= min_corr), dist

    hit, dist = matches(dh, ph, thumbs)
    ii, jj = np.nonzero(np.triu(hit, k=1))
    near = set(zip(ii.tolist(), jj.tolist(), strict=True))
    flipped: dict[tuple[int, int], int] = {}
    if mirrors is not None:
        m_hit, m_dist = matches(
            np.array([m.dhash for m in mirrors], dtype=np.uint64),
            np.array([m.phash for m in mirrors], dtype=np.uint64),
            np.stack([m.thumb for m in mirrors]),
        )
        for i, j in zip(*np.nonzero(m_hit | m_hit.T), strict=True):
            if i < j and (i, j) not in near:
                flipped[(int(i), int(j))] = int(min(m_dist[i, j], m_dist[j, i]))
    pairs = []
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(sha256):
        by_hash.setdefault(h, []).append(i)
    exact = {(i, j) for rows in by_hash.values() for k, i in enumerate(rows) for j in rows[k + 1 :]}
    for i, j in sorted(near | exact | set(flipped)):
        if (i, j) in exact:
            pairs.append(DuplicatePair(i, j, "exact", 0))
        elif (i, j) in near:
            pairs.append(DuplicatePair(i, j, "near", int(dist[i, j])))
        else:
            pairs.append(DuplicatePair(i, j, "mirror", flipped[(i, j)]))
    return pairs
