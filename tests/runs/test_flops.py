"""FLOPs per image, counted by torch.utils.flop_counter: the ViT-B/32 anchor and the run record."""

from __future__ import annotations

import torch
from helpers import tiny_config
from transformers import CLIPModel

from vptlib.models.offline import tiny_clip_config, vit_b32_config
from vptlib.runs.engine import run
from vptlib.runs.flops import count


def test_a_vit_b32_forward_counts_as_twice_its_macs():
    """timm and fvcore quote 4.41 GMACs for ViT-B/32 at 224 px: about 8.8 GFLOPs, not 4.4."""
    torch.manual_seed(0)
    model = CLIPModel(vit_b32_config()).eval()
    flops = count(lambda: model.get_image_features(pixel_values=torch.randn(1, 3, 224, 224)))
    assert abs(flops / 1e9 - 2 * 4.41) / (2 * 4.41) < 0.02


def test_attention_counts_alike_on_every_kernel():
    """On a CPU, SDPA dispatches to a flash kernel PyTorch's counter does not know: counted
    as it stands, a fp32 run's attention was zero FLOPs, eager attention's its matmuls."""
    from vptlib.runs.devices import set_attention

    torch.manual_seed(0)
    model = CLIPModel(tiny_clip_config()).vision_model.eval()
    x = torch.randn(2, 3, model.config.image_size, model.config.image_size, requires_grad=True)
    counted = {}
    for kernel in ("eager", "sdpa"):
        set_attention(model, kernel)
        counted[kernel] = count(lambda: model(pixel_values=x).pooler_output.sum())
        counted[kernel + " step"] = count(lambda: model(pixel_values=x).pooler_output.sum().backward())
    assert counted["sdpa"] == counted["eager"], counted
    # The flash backward recomputes the attention scores: more than eager's, never less.
    assert counted["sdpa step"] >= counted["eager step"] > 2 * counted["eager"], counted


def test_each_run_records_what_a_step_and_a_prediction_cost(prepared, tiny_model, tmp_path):
    probe = run(tiny_config(prepared, tiny_model, tmp_path, method="linear"), progress=False).metrics
    vpt = run(tiny_config(prepared, tiny_model, tmp_path, method="vpt_deep", epochs=1), progress=False).metrics
    zero = run(tiny_config(prepared, tiny_model, tmp_path, method="zero_shot", epochs=0), progress=False).metrics
    # the probe trains a Linear(D, C) on cached features: a forward and a backward of one matmul
    d, c = 64, 4
    assert 0 < probe["flops_per_image"]["train_step"] <= 3 * 2 * d * c + 64
    # VPT trains through the encoder: forward and backward cost more than a prediction
    assert vpt["flops_per_image"]["train_step"] > vpt["flops_per_image"]["inference"]
    assert zero["flops_per_image"]["train_step"] == 0  # nothing trains
    assert probe["flops_per_image"]["inference"] > probe["flops_per_image"]["train_step"]
