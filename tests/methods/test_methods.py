"""methods.build: the contract, trainable-parameter formulas, and each method's mechanics."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPModel

from vptlib.methods import METHODS, build, count_parameters
from vptlib.models.backbone import load_clip
from vptlib.models.offline import byte_level_tokenizer, vit_b32_config


@pytest.fixture(scope="module")
def tiny_clip(tiny_model):
    return load_clip(tiny_model)


@pytest.fixture(scope="module")
def b32():
    torch.manual_seed(0)
    return SimpleNamespace(model=CLIPModel(vit_b32_config()), tokenizer=byte_level_tokenizer())


def test_trainable_parameter_formulas_vit_b32(b32):
    D, C, L = 768, 4, 12  # width, classes, layers; VPT below with P = 5 prompts
    head = D * C + C
    expected = {
        "zero_shot": 0,
        "linear": head,
        "vpt_shallow": 6_916,  # P * D + D * C + C
        "vpt_deep": 49_156,  # L * P * D + D * C + C
        "full": 87_456_000 + head,
    }
    for method, n in expected.items():
        trainable, _ = count_parameters(build(method, b32, C))
        assert trainable == n, method
    all_clip = sum(p.numel() for p in b32.model.parameters())
    assert count_parameters(build("text_ce", b32, C))[0] == all_clip - 1  # everything but the temperature
    assert count_parameters(build("flyp", b32, C))[0] == all_clip  # the temperature trains too
    # CLIP-LoRA: rank-2 A and B on q, k, v (D x D) of every layer of both encoders; no head.
    r, Dv, Dt, Lt = 2, 768, 512, 12
    assert count_parameters(build("clip_lora", b32, C))[0] == L * 3 * 2 * r * Dv + Lt * 3 * 2 * r * Dt == 184_320
    # CoOp: n_ctx context vectors of the text width (16 x 512); CLAP: one prototype per class
    # in the 512-d joint space; Tip-Adapter-F: one 512-d key per training image (480 here).
    assert count_parameters(build("coop", b32, C))[0] == 16 * Dt == 8_192
    assert count_parameters(build("clap", b32, C))[0] == C * 512 == 2_048
    tip, n_train = build("tip_adapter_f", b32, C), 480
    views = torch.nn.functional.normalize(torch.randn(10, n_train, 512), dim=-1)
    tip.fit_features({"views": (views, torch.arange(n_train) % C)})
    assert count_parameters(tip)[0] == n_train * 512 == 245_760
    # ProLIP: the visual projection (512 x 768); GDA: nothing (its head is fitted buffers).
    # CLIP-SVD's count is pinned in tests/methods/test_frontier.py (an SVD of all 144 weights takes 20 s).
    assert count_parameters(build("prolip", b32, C))[0] == 512 * Dv == 393_216
    assert count_parameters(build("gda", b32, C))[0] == 0


@pytest.mark.parametrize("p", [0, 1, 10])
def test_vpt_formulas_tiny(tiny_clip, p):
    D, L = 64, 3
    assert count_parameters(build("vpt_shallow", tiny_clip, 4, prompt_tokens=p))[0] == p * D + D * 4 + 4
    assert count_parameters(build("vpt_deep", tiny_clip, 4, prompt_tokens=p))[0] == L * p * D + D * 4 + 4


def test_every_method_returns_logits(tiny_clip):
    x = torch.randn(3, 3, 112, 112)
    for method in METHODS:
        model = build(method, tiny_clip, 4).eval()
        with torch.no_grad():
            assert model(x).shape == (3, 4), method


def test_build_never_modifies_the_callers_model(tiny_clip):
    before = {n: p.requires_grad for n, p in tiny_clip.model.named_parameters()}
    for method in METHODS:
        build(method, tiny_clip, 4)
    assert {n: p.requires_grad for n, p in tiny_clip.model.named_parameters()} == before


@pytest.mark.parametrize(
    "method,options,needle",
    [
        ("vpt", {}, "unknown method 'vpt'; choose one of: zero_shot, linear, gda"),
        (
            "linear",
            {"prompt_tokens": 5},
            "prompt_tokens do not apply to linear; valid options: solver, through_backbone",
        ),
        ("full", {"prompt_dropout": 0.1}, "valid options: backbone_lr_scale, lp_ft"),
        ("vpt_deep", {"prompt_tokens": -1}, "prompt_tokens must be in [0, 200] (4x this model"),
        ("zero_shot", {"class_names": ("a", "b")}, "class_names has 2 names for 4 classes"),
    ],
)
def test_bad_build_arguments(tiny_clip, method, options, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        build(method, tiny_clip, 4, **options)


def test_text_methods_need_the_tokenizer(tiny_clip):
    with pytest.raises(ValueError, match="tokenizer"):
        build("zero_shot", tiny_clip.model, 4)
    assert build("linear", tiny_clip.model, 4) is not None  # image-only methods take a bare model


def test_zero_shot_prompts_are_recorded_and_configurable(tiny_clip):
    m = build("zero_shot", tiny_clip, 4, templates=("an MRI of {}.",), synonyms={"glioma": ("a glioma",)})
    assert m.text_prompts["glioma"] == ["an MRI of a glioma."]
    assert m.text_prompts["notumor"] == [
        "an MRI of no tumor.",
        "an MRI of a healthy brain.",
        "an MRI of a normal brain.",
    ]
    ens = build("zero_shot", tiny_clip, 4)
    assert len(ens.text_prompts["glioma"]) > 1  # templates x synonyms
    assert ens.text_embeddings.shape == (4, 32)
    torch.testing.assert_close(ens.text_embeddings.norm(dim=1), torch.ones(4))


def test_text_ce_is_cross_entropy_on_class_texts(tiny_clip):
    """FLYP's ablation: labels as targets against one text per class, temperature frozen."""
    m = build("text_ce", tiny_clip, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits = 100.0 * torch.nn.functional.one_hot(labels, 4).float()
    assert m.loss(logits, labels) < 1e-6  # no floor: same-class images are never negatives
    m.train()
    loss = m.loss(m(torch.randn(4, 3, 112, 112)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert m.clip.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0
    assert m.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert m.clip.logit_scale.grad is None


def test_flyp_is_clips_in_batch_loss_on_sampled_captions(tiny_clip):
    """Training: symmetric cross-entropy over (image, caption) pairs with diagonal targets,
    one random caption of its class per image, trainable temperature clipped at 100."""
    import torch.nn.functional as F

    m = build("flyp", tiny_clip, 4).train()
    x, labels = torch.randn(6, 3, 112, 112), torch.tensor([0, 0, 1, 2, 3, 3])
    torch.manual_seed(7)
    loss = m.loss(m(x), labels)
    # The same loss by hand, from the same captions.
    torch.manual_seed(7)
    m._captions = None
    tokens = m._caption_tokens(labels)
    owner = m.tokens.owner[[int(torch.nonzero((m.tokens.input_ids == t).all(1))[0]) for t in tokens["input_ids"]]]
    assert owner.tolist() == labels.tolist()  # each image's caption is of its own class
    with torch.no_grad():
        img = F.normalize(m.clip.get_image_features(pixel_values=x).pooler_output, dim=-1)
        txt = F.normalize(m.clip.get_text_features(**tokens).pooler_output, dim=-1)
        s = m.clip.logit_scale.exp() * img @ txt.T
        t = torch.arange(6)
        expected = (F.cross_entropy(s, t) + F.cross_entropy(s.T, t)) / 2
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert m.clip.logit_scale.grad is not None and m.clip.text_model.embeddings.token_embedding.weight.grad is not None
    with torch.no_grad():
        m.clip.logit_scale.fill_(10.0)
    m.on_step_end()
    assert m.clip.logit_scale.exp().item() == pytest.approx(100.0)
    # Prediction: cosine similarity with the ensembled class texts, as zero-shot CLIP.
    zs = build("zero_shot", tiny_clip, 4).eval()
    m = build("flyp", tiny_clip, 4).eval()
    with torch.no_grad():
        assert torch.allclose(m(x), zs(x), atol=1e-4)


def test_clip_lora_follows_clip_lora(b32, tiny_clip):
    from peft.tuners.lora import LoraLayer

    model = build("clip_lora", b32, 4)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * 12 * 3  # q, k, v of every layer of both encoders
    assert layers[0].scaling["default"] == pytest.approx(1 / 2**0.5)  # alpha / sqrt(rank): rsLoRA
    assert layers[0].lora_dropout["default"].p == 0.25
    assert not any(n.startswith("head") for n, _ in model.named_parameters())  # no new head
    assert all(len(p) == 1 for p in model.text_prompts.values())  # one text per class
    small = build("clip_lora", tiny_clip, 4).eval()  # B = 0: exactly CLIP's logits before training
    x = torch.randn(2, 3, 112, 112)
    enc = tiny_clip.tokenizer([p[0] for p in small.text_prompts.values()], padding=True, return_tensors="pt")
    with torch.no_grad():
        clip = tiny_clip.model
        txt = torch.nn.functional.normalize(clip.get_text_features(**enc).pooler_output, dim=-1)
        img = torch.nn.functional.normalize(clip.get_image_features(pixel_values=x).pooler_output, dim=-1)
        assert torch.allclose(small(x), clip.logit_scale.exp() * img @ txt.T, atol=1e-4)


def test_full_param_groups_and_lp_ft(tiny_clip):
    m = build("full", tiny_clip, 4, backbone_lr_scale=0.1, lp_ft=1)
    groups = m.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-4), 1e-3]
    m.on_epoch_start(0)  # probing: no gradient through the backbone
    m.loss(m(torch.randn(2, 3, 112, 112)), torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in m.vision.parameters())
    assert m.head.weight.grad is not None
    m.zero_grad(set_to_none=True)
    m.on_epoch_start(1)  # fine-tuning
    m.loss(m(torch.randn(2, 3, 112, 112)), torch.tensor([0, 1])).backward()
    assert m.vision.embeddings.patch_embedding.weight.grad is not None


@pytest.mark.parametrize("method", ["linear", "vpt_shallow", "vpt_deep", "vision_lora", "full"])
def test_every_head_starts_at_log_c(tiny_clip, method):
    """A new head starts at zero: the first loss is log C, whatever the features."""
    import math

    m = build(method, tiny_clip, 4).eval()
    with torch.no_grad():
        loss = m.loss(m(torch.randn(8, 3, 112, 112)), torch.tensor([0, 1, 2, 3] * 2))
    assert float(loss) == pytest.approx(math.log(4), abs=1e-6)


@pytest.mark.parametrize("method", ["linear", "vpt_shallow", "vpt_deep", "full"])
def test_frozen_weights_bit_identical_after_training_steps(tiny_clip, method):
    """A real optimiser step (with weight decay and momentum) changes exactly the trainable tensors."""
    from vptlib.runs.config import RunConfig
    from vptlib.runs.training import make_optimizer

    torch.manual_seed(0)
    model = build(method, tiny_clip, 4).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = RunConfig(method=method, data=".", lr=0.1, weight_decay=0.1, optimizer="sgd")
    opt = make_optimizer(model, cfg)
    for _ in range(2):
        opt.zero_grad()
        model.loss(model(torch.randn(4, 3, 112, 112)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{n} should have trained"
        else:
            assert torch.equal(p, before[n]), f"frozen {n} changed"
    assert trainable, method


def test_vision_lora_through_peft_counts_and_trains_only_adapters(b32, tiny_clip):
    from peft.tuners.lora import LoraLayer

    model = build("vision_lora", b32, 4)
    L, T, r, D = 12, 3, 2, 768
    assert count_parameters(model)[0] == L * T * 2 * r * D + D * 4 + 4  # 113,668
    assert sum(isinstance(m, LoraLayer) for m in model.modules()) == L * T
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    assert layer.scaling["default"] == pytest.approx(1 / 2)  # alpha / rank
    assert layer.lora_dropout["default"].p == 0.25
    # B starts at zero, so before training the tower is exactly the pretrained one.
    small = build("vision_lora", tiny_clip, 4).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        ref = tiny_clip.model.vision_model(pixel_values=x).pooler_output
        assert torch.allclose(small.vision(pixel_values=x).pooler_output, ref, atol=1e-6)


def test_wise_ft_endpoints(tiny_clip):
    """alpha = 0 is zero-shot CLIP exactly; alpha = 1 is the fine-tuned model."""
    x = torch.randn(3, 3, 112, 112)
    zs = build("zero_shot", tiny_clip, 4).eval()
    for base in ("full", "flyp"):
        model = build("wise_ft", tiny_clip, 4, base=base).eval()
        with torch.no_grad():
            assert torch.allclose(model(x), zs(x), atol=1e-4), base  # fine-tuning starts at zero-shot
        fine = {k: v + 0.01 * torch.randn_like(v) for k, v in model.trainable_state().items()}
        model.mix(1.0, fine)
        assert all(torch.equal(model.trainable_state()[k], v) for k, v in fine.items())
        model.mix(0.0, fine)
        with torch.no_grad():
            assert torch.allclose(model(x), zs(x), atol=1e-4), base
        model.mix(0.5, fine)
        k = next(iter(fine))
        assert torch.allclose(model.trainable_state()[k], (fine[k] + model._zero_shot[k]) / 2, atol=1e-6)


def test_wise_ft_finalize_picks_alpha_by_validation(tiny_clip):
    model = build("wise_ft", tiny_clip, 4, alphas=(0.0, 0.5, 1.0))
    fine = {k: v + 1.0 for k, v in model.trainable_state().items()}
    model.mix(1.0, fine)
    scores = {0.0: (0.5, 1.0), 0.5: (0.7, 0.9), 1.0: (0.7, 0.8)}
    info = model.finalize(lambda split: scores[model.alpha])
    assert info["wise_ft_alpha"] == 1.0  # tie on accuracy: lower validation loss
    assert model.alpha == 1.0 and [r["alpha"] for r in info["wise_ft_curve"]] == [0.0, 0.5, 1.0]


def _hub_models() -> set[str]:
    """Every hub id a profile loads: its model and each of its backbones."""
    from pathlib import Path

    from vptlib.models.hub import is_hub_id
    from vptlib.study.profile import load

    found = set()
    for path in sorted((Path(__file__).resolve().parents[2] / "profiles").glob("*.yaml")):
        p = load(path)
        found |= {m for m in [p.model, *(b["model"] for b in p.backbones.values())] if is_hub_id(m)}
    return found


def test_every_backbone_a_profile_names_has_a_known_architecture():
    from vptlib.models.offline import ARCHITECTURES, OPEN_CLIP_ARCHITECTURES

    named = _hub_models()
    assert "flaviagiammarino/pubmed-clip-vit-base-patch32" in named  # the full profile's medical CLIP
    known = {*ARCHITECTURES, *OPEN_CLIP_ARCHITECTURES}
    assert named <= known, named - known


def test_the_frozen_feature_methods_run_on_biomedclips_architecture():
    """BiomedCLIP built offline at its real shapes (ViT-B/16, PubMedBERT), random weights: every
    method that reads only frozen features builds and scores a 224-px image; the others refuse."""
    from vptlib.models import open_clip_format
    from vptlib.models.offline import OPEN_CLIP_ARCHITECTURES

    torch.manual_seed(0)
    (towers,) = (f() for f in OPEN_CLIP_ARCHITECTURES.values())
    clip = SimpleNamespace(model=open_clip_format.BiomedCLIP(towers).eval(), tokenizer=byte_level_tokenizer())
    x = torch.randn(1, 3, 224, 224)
    for method, spec in METHODS.items():
        if not spec.any_clip:
            with pytest.raises(ValueError, match="needs a transformers CLIPModel"):
                build(method, clip, 4)
            continue
        model = build(method, clip, 4).eval()
        if method == "tip_adapter_f":
            model.fit_features(
                {"views": (torch.nn.functional.normalize(torch.randn(2, 8, 512), dim=-1), torch.arange(8) % 4)}
            )
        with torch.no_grad():
            assert model(x).shape == (1, 4), method
    assert count_parameters(build("prolip", clip, 4))[0] == 512 * 768  # its projection: ViT-B/16 width 768


@pytest.mark.parametrize("model_id", sorted(m for m in _hub_models() if "BiomedCLIP" not in m))
def test_every_method_runs_on_each_backbones_architecture(model_id):
    """Built offline with random weights: every registered method builds, trains what its
    formula says (VPT-deep and CLIP-LoRA pinned here) and returns logits on a 224-px image."""
    from vptlib.models.offline import ARCHITECTURES

    torch.manual_seed(0)
    clip = SimpleNamespace(model=CLIPModel(ARCHITECTURES[model_id]()), tokenizer=byte_level_tokenizer())
    x = torch.randn(1, 3, 224, 224)
    for method in METHODS:
        model = build(method, clip, 4).eval()
        with torch.no_grad():
            assert model(x).shape == (1, 4), (model_id, method)
    assert count_parameters(build("vpt_deep", clip, 4))[0] == 49_156
    assert count_parameters(build("clip_lora", clip, 4))[0] == 184_320
