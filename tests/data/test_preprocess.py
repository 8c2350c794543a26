"""Our uint8 cache + on-device normalisation equals the CLIP image processor's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from vptlib.data.augment import Augment
from vptlib.data.dataset import SPOT_CHECK, Preprocess, load_data, normalize
from vptlib.data.images import load_rgb


@pytest.mark.parametrize(
    "size",
    [
        (256, 256),
        (300, 200),
        (200, 340),
        (225, 224),
        (113, 112),
        (227, 224),
        (224, 229),
        (301, 224),
        (115, 112),
        (512, 389),
        (389, 512),
    ],
)  # odd margins of 3, 5, ... pixels: where rounding and integer division disagree
@pytest.mark.parametrize("crop", [112, 224])
def test_parity_with_clip_image_processor(tiny_model, size, crop):
    processor = AutoImageProcessor.from_pretrained(
        tiny_model, size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop}
    )
    prep = Preprocess.from_processor(processor)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ours = normalize(torch.from_numpy(prep.to_uint8(img))[None], prep)
    theirs = processor(images=img, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, crop, crop)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_cache_decodes_once(prepared, tiny_model, monkeypatch):
    prep = Preprocess.from_processor(AutoImageProcessor.from_pretrained(tiny_model))
    first = load_data(prepared, prep)
    assert len(first.train) == 96 and len(first.val) == 24 and len(first.test) == 80
    assert first.train.pixels.dtype == torch.uint8

    decoded = []

    def counting(path, *a, **k):
        decoded.append(path)
        return load_rgb(path, *a, **k)

    monkeypatch.setattr("vptlib.data.dataset.load_rgb", counting)
    second = load_data(prepared, prep)
    assert torch.equal(first.test.pixels, second.test.pixels)
    # Only the spot check decodes again, a fixed handful whatever the data set's size.
    assert 0 < len(decoded) <= SPOT_CHECK
    # A different preprocessing setting is a different cache entry: every image is decoded.
    decoded.clear()
    load_data(prepared, Preprocess(shortest_edge=200, crop=192))
    assert len(decoded) == 200


def test_augment_shapes_range_and_determinism():
    x = torch.randint(0, 256, (6, 3, 224, 224), dtype=torch.uint8)
    aug = Augment()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_identity_augment_is_identity():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ident = Augment(scale=(1, 1), ratio=(1, 1), flip=0, degrees=0, brightness=0, contrast=0)
    torch.testing.assert_close(ident(x), x.float() / 255, atol=1e-5, rtol=0)
