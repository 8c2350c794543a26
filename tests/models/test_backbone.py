"""load_clip: the tiny model round-trips; missing weights fail fast with the two fixes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import CLIPModel

from vptlib.errors import UserError
from vptlib.models.backbone import fingerprint, load_clip
from vptlib.models.offline import tiny_clip_config, vit_b32_config


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


def test_missing_local_folder_is_named():
    with pytest.raises(UserError, match="/no/such/model does not exist"):
        load_clip("/no/such/model")


def test_cli_model_tiny_and_help(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "vptlib", "model", "tiny", "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert load_clip(tmp_path / "m").model.config.vision_config.num_hidden_layers == 3


def test_other_clip_checkpoint_by_folder_after_conversion(tiny_model, prepared, tmp_path):
    """The medical-CLIP path (e.g. flaviagiammarino/pubmed-clip-vit-base-patch32 ships only a
    pickled pytorch_model.bin): it loads as it is (torch.load(weights_only=True)), and converts
    once to safetensors with the same weights."""
    import shutil

    import torch
    from transformers import CLIPModel

    from vptlib.cli import main
    from vptlib.errors import UserError
    from vptlib.models.backbone import convert_to_safetensors, fingerprint, load_clip
    from vptlib.runs.engine import run

    original = CLIPModel.from_pretrained(tiny_model)
    pubmed = tmp_path / "pubmed-clip-vit-base-patch32"
    pubmed.mkdir()
    for f in tiny_model.iterdir():
        if f.suffix in (".json", ".txt"):
            shutil.copy2(f, pubmed / f.name)
    torch.save(original.state_dict(), pubmed / "pytorch_model.bin")
    assert fingerprint(load_clip(pubmed).model) == fingerprint(original)
    assert main(["model", "convert", "--src", str(pubmed), "--out", str(tmp_path / "converted")]) == 0
    clip = load_clip(tmp_path / "converted")
    assert fingerprint(clip.model) == fingerprint(original)
    res = run(
        method="vpt_shallow",
        data=str(prepared),
        model=str(tmp_path / "converted"),
        epochs=1,
        device="cpu",
        out=str(tmp_path / "runs"),
        progress=False,
    )
    assert res.metrics["test"]["accuracy"] >= 0
    with pytest.raises(UserError, match="no pytorch_model"):
        convert_to_safetensors(tmp_path / "converted", tmp_path / "again")


def test_attention_kernel_is_sdpa_and_recorded(tiny_model, prepared, tmp_path):
    """transformers picks PyTorch's scaled-dot-product attention; each run records the kernel."""
    import json

    from vptlib.runs.engine import run

    assert load_clip(tiny_model).model.config._attn_implementation == "sdpa"
    res = run(
        method="linear",
        data=str(prepared),
        model=str(tiny_model),
        epochs=1,
        device="cpu",
        out=str(tmp_path),
        progress=False,
    )
    assert json.loads((res.run_dir / "config.json").read_text())["attention"] == "sdpa"


@pytest.mark.parametrize(
    ("device", "precision", "kernel"),
    [
        ("cpu", "fp32", "sdpa"),
        ("cpu", "bf16", "eager"),
        ("cpu", "fp16", "eager"),
        ("cuda", "bf16", "sdpa"),
        ("cuda", "fp16", "sdpa"),
        ("cuda", "fp32", "sdpa"),
    ],
)
def test_attention_kernel_follows_device_and_precision(device, precision, kernel):
    import torch

    from vptlib.runs.devices import attention_kernel

    assert attention_kernel(torch.device(device), precision) == kernel


def test_a_bf16_cpu_run_uses_and_records_eager_attention(tiny_model, prepared, tmp_path):
    """The kernel reaches every attention layer, is recorded, and the reloaded run uses it too."""
    import json

    from vptlib.runs.engine import run
    from vptlib.runs.predict import load_predictor

    res = run(
        method="vpt_deep",
        data=str(prepared),
        model=str(tiny_model),
        epochs=1,
        device="cpu",
        precision="bf16",
        out=str(tmp_path),
        progress=False,
        keep_model=True,
    )
    assert json.loads((res.run_dir / "config.json").read_text())["attention"] == "eager"
    kernels = {m.config._attn_implementation for m in res.model.modules() if hasattr(m, "config")}
    assert kernels == {"eager"}
    predictor = load_predictor(res.run_dir)
    assert {m.config._attn_implementation for m in predictor.model.modules() if hasattr(m, "config")} == {"eager"}
    assert load_clip(tiny_model).model.config._attn_implementation == "sdpa"  # a fresh load is untouched
