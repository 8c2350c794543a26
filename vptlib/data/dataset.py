"""Read a prepared data folder into uint8 tensors, preprocessed exactly as CLIP does.

Preprocessing follows the model's own image-processor config: resize the shortest
side with its resampling filter (bicubic for CLIP), centre-crop, then rescale and
normalise with its mean and std. The first two steps produce uint8 pixels, which are
cached in ``<data>/cache/`` keyed by the manifest hash and the processor settings, so
later epochs and later runs decode no JPEG. Normalisation happens on the training
device (:func:`normalize`), after augmentation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from vptlib import tensorfile
from vptlib.errors import UserError
from vptlib.hashing import sha256_file

from .images import BadImage, load_rgb
from .manifest import manifest_hash, read_manifest
from .sets import MANIFEST, set_info

_RESAMPLE = {
    0: Image.Resampling.NEAREST,
    1: Image.Resampling.LANCZOS,
    2: Image.Resampling.BILINEAR,
    3: Image.Resampling.BICUBIC,
    4: Image.Resampling.BOX,
    5: Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocess:
    """The parts of a CLIP image-processor config that determine the pixels."""

    shortest_edge: int = 224
    crop: int = 224
    resample: int = 3  # PIL code; 3 = bicubic
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_processor(cls, processor) -> Preprocess:
        size = processor.size
        edge = size["shortest_edge"] if "shortest_edge" in size else min(size["height"], size["width"])
        crop = processor.crop_size
        if crop["height"] != crop["width"]:
            raise UserError(f"non-square crop {crop} is not supported")
        resample = processor.resample
        return cls(
            int(edge),
            int(crop["height"]),
            int(getattr(resample, "value", resample)),
            tuple(float(m) for m in processor.image_mean),
            tuple(float(s) for s in processor.image_std),
        )

    def key(self) -> str:
        """Names the pixels: the settings and the crop rule (caches made with a rounded crop are not reused)."""
        return hashlib.sha256(
            json.dumps({**self.__dict__, "crop": [self.crop, "floor"]}, sort_keys=True).encode()
        ).hexdigest()[:12]

    def to_uint8(self, img: Image.Image) -> np.ndarray:
        """Resize the shortest side and centre-crop, as ``CLIPImageProcessor`` does; ``(3, crop, crop)``."""
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(self.shortest_edge * long / short)
        size = (self.shortest_edge, new_long) if w <= h else (new_long, self.shortest_edge)
        img = img.resize(size, _RESAMPLE[self.resample])
        w, h = img.size
        # Integer division, as transformers' center_crop: rounding would shift odd margins by a pixel.
        top = (h - self.crop) // 2
        left = (w - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def normalize(pixels: torch.Tensor, prep: Preprocess) -> torch.Tensor:
    """uint8 or [0, 1] float ``(B, 3, H, W)`` -> CLIP-normalised float32."""
    x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
    mean = torch.tensor(prep.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class Split:
    """One split as tensors: ``pixels`` uint8 ``(N, 3, H, W)``, ``labels`` int64 ``(N,)``."""

    pixels: torch.Tensor
    labels: torch.Tensor
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, per_class: int, seed: int) -> Split:
        """At most ``per_class`` images of each class, drawn with ``seed`` (few-shot curves).

        Nested: the images drawn for k are among those drawn for every larger k.
        """
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        taken: dict[int, int] = {}
        keep = []
        for i in order.tolist():
            c = int(self.labels[i])
            if taken.get(c, 0) < per_class:
                taken[c] = taken.get(c, 0) + 1
                keep.append(i)
        keep.sort()
        return Split(self.pixels[keep], self.labels[keep], [self.paths[i] for i in keep])


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    prep: Preprocess
    manifest_hash: str
    root: Path
    train_full: Split | None = None  # the whole training split when ``train`` is a few-shot subset
    val_full: Split | None = None  # the whole validation split when ``val`` is a few-shot subset

    def few_shot(self, per_class: int, seed: int) -> Data:
        """At most ``per_class`` training *and validation* images per class; test unchanged.

        Few-shot means few labels: selecting the epoch on a validation split larger than
        the training set would use more labels than the method trains on. Both subsets
        are seeded and nested (the images for k are among those for every larger k).
        """
        train, val = self.train_full or self.train, self.val_full or self.val
        return dataclasses.replace(
            self,
            train=train.subset(per_class, seed),
            train_full=train,
            val=val.subset(per_class, seed + 1),
            val_full=val,
        )


def _verify_files(root: Path, df: pd.DataFrame) -> None:
    """Every listed file is still the one prepare hashed (a fraction of a second for the study)."""
    for i, (rel, sha) in enumerate(zip(df["path"], df["sha256"], strict=True)):
        try:
            ok = sha256_file(root / rel) == sha
        except OSError as exc:
            f = root / rel
            why, fix = exc.strerror, "re-run `vptlib data prepare`"
            if f.is_symlink() and not f.exists():  # prepared with --link, and the source moved
                why = f"a link to {os.readlink(f)}, which is gone (was the source moved?)"
                fix = f"move the source back, or {fix}"
            raise UserError(f"{root / MANIFEST} row {i + 2} ({rel}): {why}; {fix}") from None
        if not ok:
            raise UserError(
                f"{root / MANIFEST} row {i + 2} ({rel}): the file changed since prepare hashed it "
                f"(sha256 differs); re-run `vptlib data prepare`"
            )


_PIXELS: dict[tuple[str, int, int], torch.Tensor] = {}


def _cache_identity(root: Path, df: pd.DataFrame, prep: Preprocess) -> dict[str, str]:
    """What the pixel cache must have been decoded from: the manifest, its files' hashes in
    order, and the preprocessing."""
    files = hashlib.sha256("\n".join(f"{p} {h}" for p, h in zip(df["path"], df["sha256"], strict=True)).encode())
    return {"manifest": manifest_hash(root), "files": files.hexdigest(), "prep": prep.key(), "rows": str(len(df))}


def _decode(root: Path, rel: str, prep: Preprocess) -> np.ndarray:
    try:
        img, _, _ = load_rgb(root / rel)
    except BadImage as exc:
        raise UserError(f"{root / rel}: {exc}; re-run `vptlib data prepare`") from None
    return prep.to_uint8(img)


SPOT_CHECK = 4  # images decoded again to check a pixel cache before it is used


def _spot_check(root: Path, df: pd.DataFrame, prep: Preprocess, pixels: torch.Tensor, n: int = SPOT_CHECK) -> bool:
    """A few images decoded again equal their cached rows: a cache whose header was copied onto
    other pixels is caught too, at the cost of decoding ``n`` images."""
    if len(pixels) != len(df):
        return False
    rows = sorted({round(i * (len(df) - 1) / max(1, n - 1)) for i in range(n)})
    return all(np.array_equal(pixels[i].numpy(), _decode(root, df["path"].iloc[i], prep)) for i in rows)


def _read_pixels(cache: Path, identity: dict[str, str], keep_in_memory: bool) -> torch.Tensor | None:
    """The decoded pixel cache when it is verified (:func:`vptlib.tensorfile.read_cache`), else None;
    with ``keep_in_memory`` read from disk once per process (the engine's runs in one
    long-lived process share it; nobody writes into it)."""
    if not cache.is_file():
        return None
    st = cache.stat()
    key = (str(cache.resolve()), st.st_size, st.st_mtime_ns)
    if key in _PIXELS:
        return _PIXELS[key]
    tensors = tensorfile.read_cache(cache, identity)
    pixels = tensors.get("pixels") if tensors else None
    if keep_in_memory and pixels is not None:
        _PIXELS.clear()
        _PIXELS[key] = pixels
    return pixels


def load_data(
    data: str | Path,
    prep: Preprocess,
    classes: tuple[str, ...] | None = None,
    include_excluded: bool = False,
    verify: bool = True,
    keep_in_memory: bool = False,
    progress: bool = True,
) -> Data:
    """All three splits as uint8 tensors, decoding JPEGs only on the first call.

    ``verify`` checks every file against the sha256 prepare recorded (also when the
    pixels come from the cache); turn it off only to save that fraction of a second.
    ``keep_in_memory`` keeps the decoded pixels for the next call in this process.
    """
    root = Path(data)
    df = read_manifest(root, include_excluded=True)
    info = set_info(root)
    names = tuple(classes) if classes else tuple(info["classes"]) if info else tuple(dict.fromkeys(df["class"]))
    unknown = sorted(set(df["class"]) - set(names))
    if unknown:
        raise UserError(f"manifest has classes {unknown} not in {names}")
    mhash = manifest_hash(root)
    if verify:
        _verify_files(root, df)
    cache = root / "cache" / f"pixels-{mhash}-{prep.key()}.safetensors"
    identity = _cache_identity(root, df, prep)
    pixels = _read_pixels(cache, identity, keep_in_memory)
    if pixels is not None and not _spot_check(root, df, prep, pixels):
        pixels = None
    if pixels is None:
        if cache.is_file():
            print(f"note: {cache} does not match the verified images; decoding them again")
        arrays = []
        for rel in tqdm(df["path"], desc="decode images", unit="img", leave=False, disable=not progress):
            arrays.append(_decode(root, rel, prep))
        pixels = torch.from_numpy(np.stack(arrays))
        tensorfile.write_cache(cache, {"pixels": pixels}, identity)
    keep = np.ones(len(df), bool) if include_excluded else (df["excluded"] == "").to_numpy()
    labels = torch.tensor([names.index(c) for c in df["class"]], dtype=torch.long)

    def split(name: str) -> Split:
        idx = np.nonzero((df["split"] == name).to_numpy() & keep)[0]
        return Split(pixels[idx], labels[idx], df["path"].iloc[idx].tolist())

    data_ = Data(split("train"), split("val"), split("test"), names, prep, mhash, root)
    if len(data_.train) == 0:
        raise UserError(f"{root}: the training split is empty")
    return data_
