"""Synthetic axial "MRI-like" brain slices for tests and the offline smoke profile.

Every slice has a skull ring, textured brain tissue, ventricles, a smooth bias field,
Rician-like noise and a random global contrast. The classes differ only by a lesion:

* glioma: an irregular intra-axial mass with a heterogeneous core and oedema halo;
* meningioma: a round, sharply bounded, homogeneous extra-axial mass touching the skull;
* pituitary: a small mass on the midline near the skull base;
* notumor: anatomy only.

Position, size, contrast and shape vary per image so the task is learnable but not
trivial. The images say nothing about real MRI: they exist so that every line of the
real pipeline runs offline. Output follows the Kaggle layout (``Training/<class>/``,
``Testing/<class>/``) so it goes through the same ``prepare`` path as real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, zoom

from vptlib.atomic import atomic_dir
from vptlib.errors import UserError
from vptlib.seeds import SEED_RANGE, is_seed

from .classes import CLASSES

_SPLITS = ("Training", "Testing")
# Written beside the phantoms' Training/ and Testing/: the report says of a set drawn from
# here that its images are synthetic, never the Kaggle data's facts (vptlib.report.dataset).
MARKER = "PHANTOMS.txt"


def is_phantoms(source: str | Path) -> bool:
    """Whether ``source`` is a folder of phantoms written by :func:`write_phantoms`."""
    return (Path(source) / MARKER).is_file()


def synthetic(data_root: str | Path) -> bool:
    """Whether a prepared set was drawn from phantoms (its source folder carries their marker)."""
    from .sets import set_info

    source = (set_info(data_root) or {}).get("source")
    return bool(source) and is_phantoms(source)


_PREFIX = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma`` pixels."""
    if sigma <= 3:
        field = gaussian_filter(rng.standard_normal((n, n)), sigma)
    else:  # large kernels are slow: filter a coarse grid and upsample it
        f = int(sigma // 2)
        m = -(-n // f) + 2
        field = zoom(gaussian_filter(rng.standard_normal((m, m)), sigma / f), f, order=1)[:n, :n]
    return field / (field.std() + 1e-8)


def _blob(yy, xx, cy, cx, radius, rng, irregularity):
    """Signed radial distance to a star-shaped blob (negative inside)."""
    angle = np.arctan2(yy - cy, xx - cx)
    r = np.hypot(yy - cy, xx - cx)
    boundary = np.full_like(angle, radius)
    for k in range(2, 6):
        boundary += radius * irregularity * rng.uniform(-1, 1) / k * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return r - boundary


def phantom(label: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One slice as a ``(size, size)`` uint8 array."""
    n = size
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    cy = n / 2 + rng.uniform(-0.04, 0.04) * n
    cx = n / 2 + rng.uniform(-0.04, 0.04) * n
    ay = rng.uniform(0.40, 0.46) * n  # head half-height (anterior-posterior)
    ax = ay * rng.uniform(0.78, 0.88)  # head half-width
    theta = rng.uniform(-0.12, 0.12)
    dy, dx = yy - cy, xx - cx
    ry = (dy * np.cos(theta) + dx * np.sin(theta)) / ay
    rx = (-dy * np.sin(theta) + dx * np.cos(theta)) / ax
    rho = np.hypot(rx, ry)  # 1.0 on the outer scalp

    skull_in = rng.uniform(0.88, 0.91)
    img = np.zeros((n, n))
    img[(rho < 1.0) & (rho >= 0.96)] = 0.55  # scalp
    img[(rho < 0.96) & (rho >= skull_in)] = 0.95  # skull ring
    brain = rho < skull_in - 0.015
    tissue = (
        0.42
        + 0.05 * _smooth_noise(rng, n, 1.5)
        + 0.06 * np.sin(rho * rng.uniform(30, 45) + _smooth_noise(rng, n, 6) * 2)
    )
    img[brain] = tissue[brain]

    # Lateral ventricles: two dark lobes either side of the midline.
    vx = rng.uniform(0.05, 0.09)
    vy = rng.uniform(0.16, 0.24)
    for side in (-1, 1):
        lobe = ((rx - side * vx) / rng.uniform(0.035, 0.06)) ** 2 + ((ry + 0.05) / vy) ** 2 < 1
        img[lobe & brain] = 0.12

    lesion_contrast = rng.uniform(0.30, 0.55)
    if label == "glioma":
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.5)
        ly, lx = cy + dist * ay * np.sin(ang), cx + dist * ax * np.cos(ang)
        radius = rng.uniform(0.09, 0.16) * n
        oedema = _blob(yy, xx, ly, lx, radius * rng.uniform(1.5, 1.9), rng, 0.5) < 0
        mass = _blob(yy, xx, ly, lx, radius, rng, 0.6) < 0
        img[oedema & brain] += 0.5 * lesion_contrast * (1 + 0.3 * _smooth_noise(rng, n, 2)[oedema & brain])
        core = 0.42 + lesion_contrast * (1 + 0.6 * _smooth_noise(rng, n, 1.2))
        img[mass & brain] = core[mass & brain]
        necrosis = _blob(yy, xx, ly, lx, radius * rng.uniform(0.2, 0.5), rng, 0.4) < 0
        img[necrosis & brain] = 0.2
    elif label == "meningioma":
        ang = rng.uniform(0, 2 * np.pi)
        radius = rng.uniform(0.08, 0.14) * n
        # Centre the disc so that it touches the inner table of the skull.
        edge = skull_in - 0.02
        ly = cy + (edge * ay - radius) * np.sin(ang)
        lx = cx + (edge * ax - radius) * np.cos(ang)
        mass = np.hypot(yy - ly, xx - lx) < radius
        img[mass & (rho < skull_in)] = 0.45 + lesion_contrast + 0.02 * rng.standard_normal()
    elif label == "pituitary":
        radius = rng.uniform(0.045, 0.07) * n
        ly = cy + rng.uniform(0.55, 0.68) * ay
        lx = cx + rng.uniform(-0.03, 0.03) * n
        mass = _blob(yy, xx, ly, lx, radius, rng, 0.2) < 0
        img[mass] = 0.45 + lesion_contrast * 1.3

    img = gaussian_filter(img, rng.uniform(0.6, 1.2))  # scanner point-spread
    bias = 1 + 0.15 * _smooth_noise(rng, n, n / 6)  # coil inhomogeneity
    img = img * bias * rng.uniform(0.8, 1.15)
    sigma = rng.uniform(0.02, 0.05)
    # Magnitude of complex Gaussian noise: the Rician floor of real MR images.
    img = np.hypot(img + sigma * rng.standard_normal((n, n)), sigma * rng.standard_normal((n, n)))
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.2)
    return (img * 255).round().astype(np.uint8)


def check_options(per_class: int, size: int = 256, seed: int = 0) -> None:
    """The phantom set's settings, refused with one line when out of range (before any work)."""
    whole = [isinstance(v, int) and not isinstance(v, bool) for v in (per_class, size, seed)]
    if not all(whole) or not (1 <= per_class <= 100_000 and 64 <= size <= 4096 and is_seed(seed)):
        raise UserError(
            f"phantoms: per_class must be a whole number in [1, 100000], size in [64, 4096] and seed in "
            f"{SEED_RANGE}, got {per_class!r}, {size!r} and {seed!r}"
        )


def write_phantoms(out: str | Path, per_class: int, size: int = 256, seed: int = 0) -> Path:
    """Write ``per_class`` JPEGs per class into each of ``Training/`` and ``Testing/``."""
    check_options(per_class, size, seed)
    out = Path(out)
    with atomic_dir(out) as tmp:  # whole or not at all: a killed write leaves no half set
        for s, split in enumerate(_SPLITS):
            prefix = "Tr" if split == "Training" else "Te"
            for c, label in enumerate(CLASSES):
                folder = tmp / split / label
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    # One generator per image: adding images never changes existing ones.
                    rng = np.random.default_rng([seed, s, c, i])
                    arr = phantom(label, rng, size)
                    name = f"{prefix}-{_PREFIX[label]}_{i:04d}.jpg"
                    Image.fromarray(arr).convert("RGB").save(folder / name, quality=92)
        (tmp / MARKER).write_text(
            f"Synthetic phantoms written by vptlib.data.phantoms (per_class={per_class}, size={size}, seed={seed}):\n"
            "shapes drawn per class, not brain MRI.\n"
        )
    return out
