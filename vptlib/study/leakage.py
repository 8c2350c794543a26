"""Checks of what a test accuracy can be trusted for: leakage and the image-shape shortcut.

* :func:`leaked_test_images`: test images with an exact or near duplicate in train or
  validation (from ``duplicates.csv``). Accuracy on them measures memory, not skill,
  so :func:`dedup_accuracy` reports each method on the raw and on the de-duplicated test set.
* :func:`nearest_training`: every test image's closest training or validation image by the
  one copy rule ``prepare`` splits by (:mod:`vptlib.data.copies`), so whatever it lists as a
  copy at that rule's thresholds ``prepare`` would have kept out of test;
  :func:`nearest_by_features`: the same in CLIP's image embedding, for a reader to look at.

The shortcuts a classifier could use instead of anatomy (image shape, file and intensity
statistics) are :mod:`vptlib.study.shortcuts`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def leaked_test_images(data_root: str | Path) -> set[str]:
    """Paths of test images that duplicate (exactly or nearly) a train or validation image."""
    path = Path(data_root) / "duplicates.csv"
    d = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
    leaked: set[str] = set()
    for _, r in d.iterrows():
        if r.a_split == "test" and r.b_split != "test":
            leaked.add(r.a)
        if r.b_split == "test" and r.a_split != "test":
            leaked.add(r.b)
    return leaked


def dedup_accuracy(predictions: dict[str, pd.DataFrame], data_root: str | Path) -> pd.DataFrame:
    """Per method: test accuracy on all test images and on those without a train/val duplicate.

    ``predictions`` maps a method's name to its test rows (``path``, ``true``, ``pred``).
    """
    leaked = leaked_test_images(data_root)
    rows = []
    for name, p in predictions.items():
        ok = (p.true == p.pred).to_numpy()
        clean = ~p.path.isin(leaked).to_numpy()
        rows.append(
            {
                "method": name,
                "test images": len(p),
                "raw acc (%)": 100 * ok.mean(),
                "de-duplicated images": int(clean.sum()),
                "de-duplicated acc (%)": 100 * ok[clean].mean() if clean.any() else np.nan,
            }
        )
    return pd.DataFrame(rows).round(2)


def nearest_training(data_root: str | Path, progress: bool = False) -> pd.DataFrame:
    """For every test image, its closest training or validation image by the copy rule of
    :mod:`vptlib.data.copies`, the one ``prepare`` splits by: ``copy`` names the kind when the
    two are copies (then ``nearest`` is that copy and ``matched as`` the transform that matched),
    else ``nearest`` is the image with the highest thumbnail cosine as it is or mirrored.
    Copies first, then most similar first: a copy that reached test heads the list."""
    from PIL import Image
    from tqdm import tqdm

    from vptlib.data.copies import Signature, find_copies, sha256_file, unit
    from vptlib.data.manifest import read_manifest

    root = Path(data_root)
    df = read_manifest(root)
    cols = ["test", "nearest", "split", "similarity", "matched as", "copy"]
    train, test = df[df.split != "test"].reset_index(drop=True), df[df.split == "test"].reset_index(drop=True)
    if train.empty or test.empty:
        return pd.DataFrame(columns=cols)
    paths = list(test.path) + list(train.path)
    sigs = []
    for path in tqdm(paths, desc="copy audit", disable=not progress, mininterval=2):
        with Image.open(root / path) as img:
            sigs.append(Signature.of(img))
    grey = np.stack([s.grey for s in sigs]).astype(np.float32)
    q, t = unit(grey[: len(test)]), grey[len(test) :]
    plain, mirror = q @ unit(t).T, q @ unit(t[:, :, ::-1]).T  # (test, train + val) each
    sim = np.maximum(plain, mirror)
    where = sim.argmax(1)
    flipped = mirror[np.arange(len(q)), where] > plain[np.arange(len(q)), where]
    out = pd.DataFrame(
        {
            "test": test.path,
            "nearest": train.path[where].to_numpy(),
            "split": train.split[where].to_numpy(),
            "similarity": sim[np.arange(len(q)), where],
            "matched as": np.where(flipped, "mirrored", "as is"),
            "copy": "",
        }
    )
    for p in find_copies([sha256_file(root / x) for x in paths], sigs):
        if (p.a < len(test)) == (p.b < len(test)):
            continue  # within test, or within train + val
        i, j = (p.a, p.b - len(test)) if p.a < len(test) else (p.b, p.a - len(test))
        if out.at[i, "copy"] and out.at[i, "similarity"] >= p.similarity:
            continue
        out.loc[i, ["nearest", "split", "similarity", "matched as", "copy"]] = (
            train.path[j], train.split[j], p.similarity, p.transform, p.kind
        )  # fmt: skip
    out["similarity"] = out.similarity.astype(float)
    order = np.lexsort((-out.similarity.to_numpy(), out["copy"].eq("").to_numpy()))
    return out.iloc[order].reset_index(drop=True)


def nearest_by_features(
    data_root: str | Path, model: str, revision: str | None = None, batch_size: int = 64, progress: bool = False
) -> pd.DataFrame:
    """For every test image, its nearest training or validation image in CLIP's image space:
    the cosine of the projected, normalised image embeddings of ``model`` (the profile's
    backbone, on the images as the runs see them). A copy that pixels alone would not
    match (re-windowed, rescaled, a neighbouring slice) can still land next to its
    original here. Same columns as :func:`nearest_training`, most similar first."""
    import torch
    import torch.nn.functional as F

    from vptlib.data.dataset import Preprocess, load_data, normalize
    from vptlib.models.backbone import shared_clip

    clip, _ = shared_clip(model, revision)
    prep = Preprocess.from_processor(clip.processor)
    data = load_data(data_root, prep, progress=progress)
    if not len(data.test.labels) or not len(data.train.labels) + len(data.val.labels):
        return pd.DataFrame(columns=["test", "nearest", "split", "similarity", "matched as"])

    @torch.inference_mode()
    def embed(pixels: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(pixels), batch_size):
            x = normalize(pixels[i : i + batch_size], prep)  # (B, 3, H, W)
            pooled = clip.model.vision_model(pixel_values=x).pooler_output  # (B, D)
            out.append(F.normalize(clip.model.visual_projection(pooled).float(), dim=-1))  # (B, E)
        return torch.cat(out)

    pool = torch.cat([data.train.pixels, data.val.pixels])
    names = data.train.paths + data.val.paths
    splits = ["train"] * len(data.train.paths) + ["val"] * len(data.val.paths)
    sim = embed(data.test.pixels) @ embed(pool).T  # (test, train + val) cosines
    best, where = sim.max(1)
    out = pd.DataFrame(
        {
            "test": data.test.paths,
            "nearest": [names[i] for i in where.tolist()],
            "split": [splits[i] for i in where.tolist()],
            "similarity": best.numpy(),
            "matched as": "CLIP image embedding",
        }
    )
    return out.sort_values("similarity", ascending=False, ignore_index=True)
