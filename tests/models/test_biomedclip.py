"""BiomedCLIP's open_clip checkpoint in transformers' classes (vptlib/models/open_clip_format.py),
against a forward pass written independently from open_clip's ``timm_model.py`` and
``hf_model.py`` (and timm's ``vision_transformer.py``) on the raw checkpoint tensors; the
frozen-feature methods on it; and the hub path (online, offline, ``model fetch``) through the
stand-in, at a pinned revision."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from stand_ins import BIOMED, BIOMED_SHA, write_tiny_biomedclip

from vptlib.errors import UserError
from vptlib.methods import build
from vptlib.models import open_clip_format
from vptlib.models.backbone import load_clip

C = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_biomedclip(tmp_path_factory.mktemp("biomedclip"))


@pytest.fixture(scope="module")
def state(folder):
    return torch.load(folder / open_clip_format.WEIGHTS, weights_only=True)


def _ln(x, s, p, eps):
    return F.layer_norm(x, (x.shape[-1],), s[p + ".weight"], s[p + ".bias"], eps=eps)


def _attention(q, k, v, heads, mask=None):
    b, n, d = q.shape
    q, k, v = (t.reshape(b, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v))  # (B, H, N, d/H)
    scores = q @ k.transpose(-2, -1) * (d // heads) ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)


def reference_image(s, x):
    """timm's VisionTransformer.forward_features + forward_head (global_pool "token"), then
    open_clip TimmModel's head (Dropout, Linear without bias): from the raw checkpoint."""
    t = "visual.trunk."
    w = s[t + "patch_embed.proj.weight"]
    d, p = w.shape[0], w.shape[-1]
    x = F.conv2d(x, w, s[t + "patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)  # (B, N, D)
    x = torch.cat([s[t + "cls_token"].expand(len(x), -1, -1), x], 1) + s[t + "pos_embed"]
    i = 0
    while f"{t}blocks.{i}.norm1.weight" in s:
        b = f"{t}blocks.{i}."
        h = _ln(x, s, b + "norm1", 1e-6)
        q, k, v = F.linear(h, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        x = x + F.linear(_attention(q, k, v, d // 64), s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        h = _ln(x, s, b + "norm2", 1e-6)
        h = F.linear(F.gelu(F.linear(h, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])), s[b + "mlp.fc2.weight"])
        x = x + h + s[b + "mlp.fc2.bias"]
        i += 1
    x = _ln(x, s, t + "norm", 1e-6)
    return F.linear(x[:, 0], s["visual.head.proj.weight"])


def reference_text(s, ids):
    """open_clip HFTextEncoder.forward: BERT with mask ids != 0, the first token of the last
    hidden state, the MLP projection; BERT written out (post-norm layers, LayerNorm eps 1e-12)."""
    t = "text.transformer."
    mask = (ids != 0).long()
    e = s[t + "embeddings.word_embeddings.weight"][ids] + s[t + "embeddings.position_embeddings.weight"][: ids.shape[1]]
    x = _ln(e + s[t + "embeddings.token_type_embeddings.weight"][0], s, t + "embeddings.LayerNorm", 1e-12)
    d, i = x.shape[-1], 0
    while f"{t}encoder.layer.{i}.attention.self.query.weight" in s:
        b = f"{t}encoder.layer.{i}."
        q, k, v = (
            F.linear(x, s[f"{b}attention.self.{n}.weight"], s[f"{b}attention.self.{n}.bias"])
            for n in ("query", "key", "value")
        )
        a = F.linear(
            _attention(q, k, v, d // 64, mask),
            s[b + "attention.output.dense.weight"],
            s[b + "attention.output.dense.bias"],
        )
        x = _ln(x + a, s, b + "attention.output.LayerNorm", 1e-12)
        h = F.gelu(F.linear(x, s[b + "intermediate.dense.weight"], s[b + "intermediate.dense.bias"]))
        x = _ln(
            x + F.linear(h, s[b + "output.dense.weight"], s[b + "output.dense.bias"]), s, b + "output.LayerNorm", 1e-12
        )
        i += 1
    return F.linear(F.gelu(F.linear(x[:, 0], s["text.proj.0.weight"])), s["text.proj.2.weight"])


def test_both_towers_match_an_independent_forward(folder, state):
    clip = load_clip(folder)
    px = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = clip.model.get_image_features(pixel_values=px).pooler_output
        torch.testing.assert_close(ours, reference_image(state, px), rtol=1e-4, atol=1e-5)
        enc = clip.tokenizer(["a brain mri showing a glioma.", "no tumor"], padding=True, return_tensors="pt")
        assert enc["input_ids"][1, -1] == 0  # the shorter prompt is padded: the mask matters
        text = clip.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        torch.testing.assert_close(text.pooler_output, reference_text(state, enc["input_ids"]), rtol=1e-4, atol=1e-5)
    assert float(clip.model.logit_scale.detach().exp()) == pytest.approx(100.0, rel=1e-3)
    # open_clip's inference preprocessing: resize 32 bicubic, centre crop 32, CLIP's mean and std
    assert clip.processor.crop_size == {"height": 32, "width": 32} and clip.processor.resample == 3


@pytest.mark.parametrize("method", ["zero_shot", "linear", "gda", "prolip", "clap", "tip_adapter_f"])
def test_the_frozen_feature_methods_build_and_score_on_it(folder, method):
    clip = load_clip(folder)
    model = build(method, clip, C).eval()
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if method == "tip_adapter_f":
        views = F.normalize(torch.randn(2, 8, 32), dim=-1)
        model.fit_features({"views": (views, torch.arange(8) % C)})
    with torch.no_grad():
        assert model(px).shape == (2, C)


def test_methods_that_need_clips_own_towers_say_so(folder):
    clip = load_clip(folder)
    with pytest.raises(ValueError, match="vpt_shallow needs a transformers CLIPModel"):
        build("vpt_shallow", clip, C)


def test_a_checkpoint_of_another_architecture_is_named(folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for f in folder.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((other / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_proj_type"] = "linear"
    (other / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="hf_proj_type is not BiomedCLIP's"):
        load_clip(other)


def test_a_run_on_it_records_its_support_set(folder, prepared, tmp_path):
    from helpers import tiny_config

    from vptlib.runs.engine import run

    res = run(tiny_config(prepared, folder, tmp_path, method="gda", epochs=0), progress=False)
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["support_set"]["train"] == cfg["splits"]["train"]
    assert 0.0 <= res.metrics["test"]["accuracy"] <= 1.0


def test_online_then_offline_then_fetched_at_the_pinned_revision(biomed_stand_in, online, monkeypatch, tmp_path):
    from vptlib.models.snapshot import fetch

    monkeypatch.setenv("HF_ENDPOINT", biomed_stand_in.url)
    first = load_clip(BIOMED, revision=BIOMED_SHA)
    assert first.source.commit == BIOMED_SHA and first.source.weights.name == open_clip_format.WEIGHTS
    assert isinstance(first.model, open_clip_format.BiomedCLIP)
    biomed_stand_in.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = load_clip(BIOMED, revision=BIOMED_SHA)  # from the cache, no network
    assert again.source.folder == first.source.folder
    out = fetch(BIOMED, BIOMED_SHA, tmp_path / "fetched")  # from the cache
    meta = json.loads((out / "source.json").read_text())
    assert meta["commit"] == BIOMED_SHA and open_clip_format.WEIGHTS in meta["files"] and "vocab.txt" in meta["files"]
    assert not os.path.exists(out / "config.json")
    assert isinstance(load_clip(out).model, open_clip_format.BiomedCLIP)
