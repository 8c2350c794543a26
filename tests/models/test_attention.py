"""CLS attention maps: equal to transformers' own attention weights; prompt shares for VPT."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from vptlib.methods import build
from vptlib.models.attention import cls_attention
from vptlib.models.backbone import load_clip

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def clip(tiny_model):
    return load_clip(tiny_model)


def test_recomputed_attention_equals_transformers_eager_weights(clip):
    torch.manual_seed(0)
    model = build("full", clip, 4).eval()
    x = torch.randn(3, 3, 112, 112)
    ours = cls_attention(model, x)
    vision = model.vision
    vision.config._attn_implementation = "eager"
    with torch.no_grad():
        out = vision(pixel_values=x, output_attentions=True)
    assert len(out.attentions) == len(ours.to_patches) == 3
    for layer, att in enumerate(out.attentions):
        cls = att[:, :, 0, :].mean(1)
        assert torch.allclose(torch.from_numpy(ours.to_patches[layer]).flatten(1), cls[:, 1:], atol=1e-5)
        assert torch.allclose(torch.from_numpy(ours.to_cls[layer]), cls[:, 0], atol=1e-5)


@pytest.mark.parametrize(
    "method,prompts",
    [
        ("linear", False),
        ("vision_lora", False),
        ("vpt_shallow", True),
        ("vpt_deep", True),
        ("text_ce", False),
        ("flyp", False),
        ("clip_lora", False),
    ],
)
def test_every_method_yields_maps_and_prompt_shares(clip, method, prompts):
    att = cls_attention(
        build(method, clip, 4, **({"prompt_tokens": 7} if prompts else {})), torch.randn(2, 3, 112, 112)
    )
    assert att.to_patches.shape == (3, 2, 7, 7)
    total = att.to_patches.sum((2, 3)) + att.to_prompts + att.to_cls
    assert torch.allclose(torch.from_numpy(total), torch.ones(3, 2), atol=1e-5)  # a distribution over tokens
    assert (att.to_prompts > 0).all() if prompts else (att.to_prompts == 0).all()
