"""load_clip: the tiny model round-trips; missing weights fail fast with the two fixes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from transformers import CLIPModel

from vptlib.backbone import fingerprint, load_clip, tiny_clip_config, vit_b32_config
from vptlib.errors import UserError


def test_tiny_round_trip(tiny_model):
    clip = load_clip(tiny_model)
    again = load_clip(str(tiny_model))
    assert fingerprint(clip.model) == fingerprint(again.model)
    assert (tiny_model / "model.safetensors").is_file()
    assert not list(tiny_model.glob("*.bin")), "weights must be safetensors"
    size = clip.processor.crop_size["height"]
    assert size == clip.model.config.vision_config.image_size == 112
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = clip.model.vision_model(pixel_values=x)
    assert out.last_hidden_state.shape == (2, 50, 64)  # 49 patches + CLS, as ViT-B/32
    ids = clip.tokenizer(["a brain MRI showing a glioma"], padding=True, return_tensors="pt")
    with torch.no_grad():
        text = clip.model.get_text_features(**ids).pooler_output
    assert text.shape == (1, 32)


def test_fingerprint_changes_with_weights():
    torch.manual_seed(0)
    m = CLIPModel(tiny_clip_config())
    before = fingerprint(m)
    with torch.no_grad():
        m.visual_projection.weight[0, 0] += 1e-3
    assert fingerprint(m) != before


def test_vit_b32_parameter_counts():
    with torch.device("meta"):
        m = CLIPModel(vit_b32_config())
    vision = sum(p.numel() for p in m.vision_model.parameters())
    assert vision == 87_456_000
    assert vision + m.visual_projection.weight.numel() == 87_849_216
    cfg = m.config.vision_config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.patch_size, cfg.hidden_act) == (12, 768, 32, "quick_gelu")


def test_hub_id_offline_fails_fast_with_fixes(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        load_clip("openai/clip-vit-base-patch32")
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "openai/clip-vit-base-patch32" in msg
    assert "pre-download" in msg and "local folder" in msg


def test_missing_local_folder_is_named():
    with pytest.raises(UserError, match="/no/such/model does not exist"):
        load_clip("/no/such/model")


def test_cli_model_tiny_and_help(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vptlib", "model", "tiny", "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert load_clip(tmp_path / "m").model.config.vision_config.num_hidden_layers == 3
