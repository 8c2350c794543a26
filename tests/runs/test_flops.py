"""FLOPs per image, counted by torch.utils.flop_counter: the ViT-B/32 anchor and the run record."""

from __future__ import annotations

import torch
from helpers import tiny_config
from transformers import CLIPModel

from vptlib.models.offline import vit_b32_config
from vptlib.runs.engine import run
from vptlib.runs.flops import count


def test_a_vit_b32_forward_counts_as_twice_its_macs():
    """timm and fvcore quote 4.41 GMACs for ViT-B/32 at 224 px: about 8.8 GFLOPs, not 4.4."""
    torch.manual_seed(0)
    model = CLIPModel(vit_b32_config()).eval()
    flops = count(lambda: model.get_image_features(pixel_values=torch.randn(1, 3, 224, 224)))
    assert abs(flops / 1e9 - 2 * 4.41) / (2 * 4.41) < 0.02


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
