"""VPT against an independent reference forward, on the tiny config and real ViT-B/32 shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel
from transformers.activations import QuickGELUActivation

from vptlib.methods.visual_prompt import PromptedVisionEncoder, prompt_init_bound
from vptlib.models.fast_layer import QuickGELU
from vptlib.models.offline import tiny_clip_config, vit_b32_config
from vptlib.runs.devices import cast_frozen, set_attention


@pytest.fixture(scope="module")
def vit_b32() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(vit_b32_config()).eval()


@pytest.fixture(scope="module")
def tiny() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(tiny_clip_config()).eval()


def _x(clip: CLIPModel, batch: int = 2) -> torch.Tensor:
    size = clip.config.vision_config.image_size
    return torch.randn(batch, 3, size, size)


def _layer_ref(layer, x: torch.Tensor) -> torch.Tensor:
    """A pre-LN CLIP block written from its weights: no call into HF's layer forward."""
    attn, heads = layer.self_attn, layer.self_attn.num_heads
    b, n, d = x.shape
    h = F.layer_norm(x, (d,), layer.layer_norm1.weight, layer.layer_norm1.bias, layer.layer_norm1.eps)

    def split(t):
        return t.view(b, n, heads, d // heads).transpose(1, 2)

    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    x = x + attn.out_proj((w @ v).transpose(1, 2).reshape(b, n, d))
    h = F.layer_norm(x, (d,), layer.layer_norm2.weight, layer.layer_norm2.bias, layer.layer_norm2.eps)
    h = layer.mlp.fc1(h)
    h = h * torch.sigmoid(1.702 * h)  # quick_gelu
    return x + layer.mlp.fc2(h)


def _reference(vision, pixels, prompts, deep_prompts=None):
    """The spec's algorithm, step by step, from the tower's raw weights."""
    emb = vision.embeddings
    patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
    cls = emb.class_embedding.expand(pixels.shape[0], 1, -1)
    x = torch.cat([cls, patches], 1) + emb.position_embedding.weight[None]
    p = prompts.shape[0]
    x = torch.cat([x[:, :1], prompts.expand(x.shape[0], -1, -1), x[:, 1:]], 1)
    ln = vision.pre_layrnorm
    x = F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, ln.eps)
    for i, layer in enumerate(vision.encoder.layers):
        if deep_prompts is not None and i >= 1:
            x = torch.cat([x[:, :1], deep_prompts[i - 1].expand(x.shape[0], -1, -1), x[:, 1 + p :]], 1)
        x = _layer_ref(layer, x)
    ln = vision.post_layernorm
    return F.layer_norm(x[:, 0], x.shape[-1:], ln.weight, ln.bias, ln.eps)


@pytest.mark.parametrize("model_name", ["tiny", "vit_b32"])
@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("training", [False, True])  # training skips the rows whose output is unused
def test_matches_independent_reference(request, model_name, deep, training):
    clip = request.getfixturevalue(model_name)
    torch.manual_seed(1)
    enc = PromptedVisionEncoder(clip.vision_model, num_tokens=5, deep=deep).train(training)
    x = _x(clip)
    try:
        with torch.no_grad():
            ours = enc(x)
            ref = _reference(clip.vision_model, x, enc.prompts, enc.deep_prompts)
    finally:
        clip.eval()
    assert ours.shape == (2, clip.config.vision_config.hidden_size)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def _tiny_with(act: str) -> CLIPModel:
    cfg = tiny_clip_config()
    cfg.vision_config.hidden_act = act
    torch.manual_seed(0)
    return CLIPModel(cfg).eval()


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])  # QuickGELU runs fused; others as the layer's module
def test_skipping_unused_rows_changes_the_work_not_the_result(deep, kernel, act):
    clip = _tiny_with(act)
    vision = clip.vision_model
    set_attention(vision, kernel)
    torch.manual_seed(2)
    enc = PromptedVisionEncoder(vision, num_tokens=3, deep=deep).train()
    x = _x(clip)
    rows: list[int] = []
    hooks = [
        layer.mlp.fc1.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[1]))
        for layer in vision.encoder.layers
    ]
    results = {}
    try:
        for skip in (False, True):
            enc.skip_unused_rows = skip
            enc.zero_grad()
            out = enc(x)
            out.pow(2).sum().backward()
            grads = [enc.prompts.grad.clone()] + ([enc.deep_prompts.grad.clone()] if deep else [])
            results[skip] = (out.detach(), grads)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results[True][1], results[False][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    layers, n = len(vision.encoder.layers), 1 + 3 + 49
    # Whole layers first; then every MLP but the last skips the prompt rows (deep) or none (shallow),
    # and the last one sees CLS only.
    assert rows == [n] * layers + [1 + 49 if deep else n] * (layers - 1) + [1]


def test_quick_gelu_is_clips_activation_with_its_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 7, 16, dtype=torch.float64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(QuickGELU.apply, (x.detach().requires_grad_(),))
    ours, theirs = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    g = torch.randn_like(x)
    QuickGELU.apply(ours).backward(g)
    ref = QuickGELUActivation()(theirs)
    ref.backward(g)
    torch.testing.assert_close(QuickGELU.apply(x.detach()), ref.detach())
    torch.testing.assert_close(ours.grad, theirs.grad)
    # bf16: within bf16's rounding of the reference
    xb = x.detach().bfloat16().requires_grad_()
    QuickGELU.apply(xb).backward(g.bfloat16())
    torch.testing.assert_close(xb.grad.double(), theirs.grad, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("deep", [False, True])
def test_training_under_bf16_autocast_casts_each_layer_norm_once(deep):
    """Under autocast, every projection in training reads a bf16 input (one cast per layer
    norm, not one per projection), QuickGELU runs fused, and the result stays within bf16
    rounding of HF's whole layers. Autocast is forced, whatever this machine's CPU."""
    clip = _tiny_with("quick_gelu")
    vision = clip.vision_model
    set_attention(vision, "eager")
    torch.manual_seed(3)
    enc = PromptedVisionEncoder(vision, num_tokens=3, deep=deep).train()
    cast_frozen(enc, "bf16")
    x = _x(clip)
    seen: list[torch.dtype] = []
    acts: list[int] = []
    projections = [
        m
        for layer in vision.encoder.layers
        for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.mlp.fc1)
    ]
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype)) for m in projections]
    hooks += [
        layer.mlp.activation_fn.register_forward_hook(lambda *_: acts.append(1)) for layer in vision.encoder.layers
    ]
    results = {}
    try:
        for skip in (False, True):
            enc.skip_unused_rows = skip
            seen.clear(), acts.clear()
            enc.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = enc(x)
            out.float().pow(2).sum().backward()
            results[skip] = (out.detach().float(), enc.prompts.grad.clone(), list(seen), len(acts))
    finally:
        for h in hooks:
            h.remove()
    assert set(results[False][2]) == {torch.float32}  # HF's layers: autocast casts inside each op
    assert results[True][2] == [torch.bfloat16] * len(projections)
    assert results[False][3] == len(vision.encoder.layers) and results[True][3] == 0  # fused, not the module
    torch.testing.assert_close(results[True][0], results[False][0], atol=0.05, rtol=0.05)
    torch.testing.assert_close(
        results[True][1], results[False][1], atol=0.05 * results[False][1].abs().max().item(), rtol=0.1
    )


@pytest.mark.parametrize("model_name", ["tiny", "vit_b32"])
def test_zero_prompts_reproduce_pooler_output(request, model_name):
    clip = request.getfixturevalue(model_name)
    enc = PromptedVisionEncoder(clip.vision_model, num_tokens=0).eval()
    x = _x(clip)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), clip.vision_model(pixel_values=x).pooler_output, atol=1e-5, rtol=1e-5)


def test_prompts_change_the_output(tiny):
    enc = PromptedVisionEncoder(tiny.vision_model, num_tokens=5).eval()
    x = _x(tiny, 1)
    with torch.no_grad():
        before = enc(x)
        enc.prompts.add_(torch.randn_like(enc.prompts))  # a constant shift would vanish in ln_pre
        assert not torch.allclose(before, enc(x))


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_sequence_length_is_constant(tiny, deep, training):
    enc = PromptedVisionEncoder(tiny.vision_model, num_tokens=7, deep=deep).train(training)
    lengths = []
    # layer_norm1 sees every layer's whole input, whether the layer runs whole or by rows.
    hooks = [
        layer.layer_norm1.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
        for layer in tiny.vision_model.encoder.layers
    ]
    try:
        with torch.no_grad():
            enc(_x(tiny, 1))
    finally:
        for h in hooks:
            h.remove()
        tiny.eval()
    assert lengths == [1 + 7 + 49] * tiny.config.vision_config.num_hidden_layers


@pytest.mark.parametrize("deep", [False, True])
def test_gradients_reach_only_the_prompts(tiny, deep):
    enc = PromptedVisionEncoder(tiny.vision_model, num_tokens=3, deep=deep)
    head = torch.nn.Linear(64, 4)
    loss = head(enc(_x(tiny))).logsumexp(1).sum()
    loss.backward()
    assert enc.prompts.grad is not None and enc.prompts.grad.abs().sum() > 0  # the earlier report's was exactly 0
    if deep:
        assert (enc.deep_prompts.grad.abs().sum(dim=(1, 2)) > 0).all()  # every layer's prompts learn
    for name, p in enc.vision.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    assert head.weight.grad is not None


def test_init_bound_uses_patch_size(vit_b32):
    v = prompt_init_bound(32, 768)
    assert v == pytest.approx(0.039528, abs=1e-6)
    assert prompt_init_bound(32, 768) / prompt_init_bound(224, 768) == pytest.approx(6.3, abs=0.1)
    torch.manual_seed(0)
    enc = PromptedVisionEncoder(vit_b32.vision_model, num_tokens=50, deep=True)
    for t in (enc.prompts, enc.deep_prompts):
        assert t.abs().max() <= v
        assert t.abs().max() > 0.99 * v  # uniform over the whole interval, not a narrower one
        assert t.std().item() == pytest.approx(v / math.sqrt(3), rel=0.05)


def test_shapes_and_negative_tokens(tiny):
    enc = PromptedVisionEncoder(tiny.vision_model, num_tokens=4, deep=True)
    assert enc.prompts.shape == (4, 64)
    assert enc.deep_prompts.shape == (2, 4, 64)
    assert PromptedVisionEncoder(tiny.vision_model, num_tokens=4).deep_prompts is None
    with pytest.raises(ValueError):
        PromptedVisionEncoder(tiny.vision_model, num_tokens=-1)


def test_prompt_dropout_is_per_image(tiny):
    enc = PromptedVisionEncoder(tiny.vision_model, num_tokens=5, dropout=0.5).train()
    x = _x(tiny, 1).expand(2, -1, -1, -1)
    torch.manual_seed(0)
    out = enc(x)
    assert not torch.allclose(out[0], out[1])  # same image, different masks
