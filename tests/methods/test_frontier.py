"""CLIP-SVD, ProLIP and GDA against independent computations of what their papers' code does
(HealthX-Lab/CLIP-SVD svf_utils/, astra-vision/ProLIP methods/ProLIP.py, mrflogs/ICLR24
main_few_shots.py), on the tiny CLIP, plus one short run of each through the engine."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config
from transformers import CLIPConfig, CLIPModel

from vptlib.methods import build, clip_svd, gda, prolip
from vptlib.models.backbone import load_clip

C = 4


@pytest.fixture(scope="module")
def tiny_clip(tiny_model):
    return load_clip(tiny_model)


def _pixels(clip, n: int = 6, seed: int = 1) -> torch.Tensor:
    size = clip.model.config.vision_config.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _clip_logits(model: CLIPModel, tokenizer, prompts: list[str], pixels: torch.Tensor) -> torch.Tensor:
    """CLIP's own logits, written out from transformers' CLIPModel: no vptlib code."""
    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = F.normalize(model.get_text_features(**enc).pooler_output, dim=-1)
        img = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        return model.logit_scale.exp() * img @ text.T


# ------------------------------------------------------------------------------- CLIP-SVD
def test_clip_svd_untouched_is_clip_itself(tiny_clip):
    """Factoring every target as U diag(s) V^T changes nothing until s moves: the logits are the
    unmodified CLIP's on the same class texts ("a photo of a {BTMRI name}.")."""
    model = build("clip_svd", tiny_clip, C).eval()
    prompts = [ps[0] for ps in model.text_prompts.values()]
    assert prompts == [
        "a photo of a glioma tumor.",
        "a photo of a meningioma tumor.",
        "a photo of a normal brain.",
        "a photo of a pituitary tumor.",
    ]
    x = _pixels(tiny_clip)
    with torch.no_grad():
        ours = model(x)
    torch.testing.assert_close(
        ours, _clip_logits(tiny_clip.model, tiny_clip.tokenizer, prompts, x), rtol=1e-4, atol=1e-4
    )


def test_clip_svd_trained_values_act_as_numpys_factorisation(tiny_clip):
    """After a step, each factored layer computes U diag(s') V^T with U, V from numpy's own SVD
    of the original weight: a CLIPModel carrying those rebuilt weights gives the same logits."""
    torch.manual_seed(0)
    model = build("clip_svd", tiny_clip, C)
    x, y = _pixels(tiny_clip, 8), torch.arange(8) % C
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05, weight_decay=0.0)
    model.loss(model(x), y).backward()
    opt.step()
    rebuilt = copy.deepcopy(tiny_clip.model)
    ours = dict(model.clip.named_modules())
    changed = 0
    for name, layer in rebuilt.named_modules():
        if isinstance(layer, torch.nn.Linear) and name in ours and isinstance(ours[name], clip_svd.SingularValues):
            w = layer.weight.detach().double().numpy()
            u, s, vh = np.linalg.svd(w, full_matrices=False)
            s_new = ours[name].s.detach().double().numpy()
            assert np.allclose(s, ours[name].s.detach().double().numpy(), atol=0.2)  # one small step from s
            layer.weight.data = torch.from_numpy((u * s_new) @ vh).float()
            changed += 1
    assert changed == model.factored
    prompts = [ps[0] for ps in model.text_prompts.values()]
    model.eval()
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, _clip_logits(rebuilt, tiny_clip.tokenizer, prompts, x), rtol=1e-3, atol=1e-3)


def _count(config: CLIPConfig) -> int:
    """The singular values CLIP-SVD trains, from the config: per encoder, L layers x 6 targets of rank D."""
    v, t = config.vision_config, config.text_config
    return v.num_hidden_layers * 6 * v.hidden_size + t.num_hidden_layers * 6 * t.hidden_size


def test_clip_svd_trains_only_singular_values_in_every_target(tiny_clip):
    model = build("clip_svd", tiny_clip, C)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith(".s") for n in trainable)
    layers = (
        tiny_clip.model.config.vision_config.num_hidden_layers + tiny_clip.model.config.text_config.num_hidden_layers
    )
    assert model.factored == len(trainable) == 6 * layers
    assert sum(trainable.values()) == _count(tiny_clip.model.config)


def test_clip_svd_on_vit_b32_trains_92160_singular_values():
    """The count on ViT-B/32's shapes: one layer of each encoder at ViT-B/32's widths (random
    weights: the count does not depend on them; every layer is alike), times its 12 layers."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 1, "num_attention_heads": 8},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 1, "patch_size": 32},
        projection_dim=512,
    )
    model = CLIPModel(config)
    assert clip_svd.factor(model) == 12
    per_layer_pair = sum(m.s.numel() for m in model.modules() if isinstance(m, clip_svd.SingularValues))
    assert per_layer_pair == _count(config) == 6 * (768 + 512)
    assert 12 * per_layer_pair == 92_160


def test_clip_svd_recipe_is_btmri_yaml():
    d = clip_svd.DEFAULTS
    assert (d.epochs, d.lr, d.optimizer, d.weight_decay) == (100, 0.007, "adamw", 0.0)
    assert clip_svd.BATCH_SIZE == 32 and clip_svd.TEMPLATE == "a photo of a {}."


# ------------------------------------------------------------------------------- ProLIP
def test_prolip_starts_as_zero_shot_and_trains_only_the_projection(tiny_clip):
    """With W = CLIP's visual projection, the head on the pre-projection feature is zero-shot CLIP."""
    model = build("prolip", tiny_clip, C).eval()
    zs = build("zero_shot", tiny_clip, C).eval()
    x = _pixels(tiny_clip)
    with torch.no_grad():
        torch.testing.assert_close(model(x), zs(x), rtol=1e-4, atol=1e-4)
    trainable = [(n, p.shape) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [("head.weight", tiny_clip.model.visual_projection.weight.shape)]
    assert model.full_batch and model.feature_views == prolip.AUGMENT_VIEWS == 300


def test_prolip_loss_is_ce_plus_frobenius_over_n(tiny_clip):
    """ProLIP.py:201-205: CE + lambda * MSELoss(sum)(W0, W), lambda = 1/N (N: shots per class)."""
    model = build("prolip", tiny_clip, C)
    feats = torch.randn(12, model.head.in_features, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % C
    model.fit_features({"train": (feats, labels)})
    with torch.no_grad():
        model.head.weight.add_(0.01 * torch.randn_like(model.head.weight))
    logits = model.head(feats)
    w, w0 = model.head.weight.detach(), model.head.start
    expected = F.cross_entropy(logits, labels) + (1 / 3) * torch.nn.MSELoss(reduction="sum")(w0.view(-1), w.view(-1))
    torch.testing.assert_close(model.loss(logits, labels), expected)


# ------------------------------------------------------------------------------- GDA
def _gda_reference(vecs: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """main_few_shots.py:56-64 in numpy, line by line."""
    mus = np.stack([vecs[labels == i].mean(0) for i in range(classes)])
    center = np.concatenate([vecs[labels == i] - mus[i][None] for i in range(classes)])
    cov = np.cov(center.T)  # torch's center_vecs.T.cov(): variables in rows
    cov_inv = center.shape[1] * np.linalg.pinv((center.shape[0] - 1) * cov + np.trace(cov) * np.eye(center.shape[1]))
    ps = np.ones(classes) / classes
    w = np.einsum("nd,dc->cn", mus, cov_inv)
    b = np.log(ps) - np.einsum("nd,dc,nc->n", mus, cov_inv, mus) / 2
    return w, b


def test_gda_fit_is_the_codes_estimate():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(90, 16)) + np.repeat(rng.normal(size=(3, 16)), 30, axis=0)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = np.repeat(np.arange(3), 30)
    w, b = gda.fit_gaussians(torch.from_numpy(vecs).float(), torch.from_numpy(labels), 3)
    w_ref, b_ref = _gda_reference(vecs.astype(np.float32).astype(np.float64), labels, 3)
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-4, atol=1e-3)


def test_gda_chooses_alpha_as_the_code_does(tiny_clip):
    """The first alpha of best validation accuracy over the code's grid; logits are
    100 * f @ T.T + alpha * (f @ W + b) (main_few_shots.py:70-76)."""
    model = build("gda", tiny_clip, C).eval()
    gen = torch.Generator().manual_seed(0)
    dim = model.head.in_features
    views = F.normalize(torch.randn(3, 20, dim, generator=gen), dim=-1)
    labels = torch.arange(20) % C
    val = F.normalize(torch.randn(16, dim, generator=gen), dim=-1)
    val_y = torch.arange(16) % C
    out = model.fit_features({"views": (views, labels), "val": (val, val_y)})
    w, b = gda.fit_gaussians(views.flatten(0, 1), labels.repeat(3), C)
    best, best_alpha = 0.0, gda.START_ALPHA
    for alpha in gda.ALPHAS:
        logits = model.head.scale * val @ model.head.text.T + alpha * (val @ w + b)
        acc = float((logits.argmax(1) == val_y).float().mean())
        if acc > best:
            best, best_alpha = acc, alpha
    assert out["gda_alpha"] == best_alpha
    assert [r["alpha"] for r in out["gda_alpha_curve"]] == list(gda.ALPHAS)
    none = build("gda", tiny_clip, C).fit_features({"views": (views, labels)})
    assert none["gda_alpha"] == gda.START_ALPHA and none["gda_alpha_curve"] == []


# ------------------------------------------------------------------------------- the engine
@pytest.mark.parametrize(
    ("method", "kw"),
    [("gda", {"epochs": 0}), ("prolip", {"epochs": 2, "options": {"views": 3}}), ("clip_svd", {"epochs": 1})],
)
def test_each_runs_end_to_end(method, kw, prepared, tiny_model, tmp_path):
    from vptlib.runs.engine import run

    res = run(tiny_config(prepared, tiny_model, tmp_path, method=method, **kw), progress=False)
    assert 0.0 <= res.metrics["test"]["accuracy"] <= 1.0
    if method == "prolip":  # one full-batch step an epoch
        assert list(res.history["steps"]) == [1, 2]
    if method == "gda":
        assert res.history.empty and "gda_alpha" in res.metrics
