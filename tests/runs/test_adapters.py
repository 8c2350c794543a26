"""A LoRA run's adapters load with peft's own PeftModel.from_pretrained and give the run's features."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_config
from safetensors import safe_open

from vptlib.runs.engine import run
from vptlib.runs.record_writer import ADAPTER
from vptlib.runs.records import load_run


def _pixels(config, n: int = 3) -> torch.Tensor:
    size = getattr(config, "vision_config", config).image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("method", "base_class"), [("vision_lora", "CLIPVisionModel"), ("clip_lora", "CLIPModel")])
def test_a_lora_run_loads_with_peft(method, base_class, prepared, tiny_model, tmp_path):
    import transformers
    from peft import PeftModel

    res = run(tiny_config(prepared, tiny_model, tmp_path, method=method, epochs=1, lr=0.05), progress=False)
    folder = res.run_dir / ADAPTER
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(tiny_model)
    assert config["r"] == 2 and config["use_rslora"] == (method == "clip_lora")
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata()["run_id"] == res.run_dir.name and f.metadata()["base_class"] == base_class
        assert all(k.startswith("base_model.model.") and ".default." not in k for k in f.keys())  # noqa: SIM118

    ours, _ = load_run(res.run_dir)
    ours.eval()
    base = getattr(transformers, base_class).from_pretrained(str(tiny_model))
    plain = getattr(transformers, base_class).from_pretrained(str(tiny_model)).eval()
    peft = PeftModel.from_pretrained(base, str(folder)).eval()
    x = _pixels(plain.config)
    with torch.no_grad():
        if method == "vision_lora":
            got, want = peft(pixel_values=x).pooler_output, ours.vision(pixel_values=x).pooler_output
            untouched = plain(pixel_values=x).pooler_output
        else:
            got = peft.get_image_features(pixel_values=x).pooler_output
            want = ours.clip.get_image_features(pixel_values=x).pooler_output
            untouched = plain.get_image_features(pixel_values=x).pooler_output
            tokens = ours.tokens.batch()
            assert torch.allclose(
                peft.get_text_features(**tokens).pooler_output,
                ours.clip.get_text_features(**tokens).pooler_output,
                atol=1e-5,
            )
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, untouched, atol=1e-4), "the adapters changed nothing: the test would prove nothing"


def test_a_method_without_lora_writes_no_adapter(prepared, tiny_model, tmp_path):
    res = run(tiny_config(prepared, tiny_model, tmp_path, epochs=1), progress=False)
    assert not (res.run_dir / ADAPTER).exists()
