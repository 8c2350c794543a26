"""CoOp, Tip-Adapter-F and CLAP against the formulas of their papers' code.

Each check states what the reference code computes (KaiyangZhou/CoOp trainers/coop.py,
gaopengcuhk/Tip-Adapter main.py and utils.py, jusiro/CLAP trainers/adapters.py) and
compares the module with it on the tiny CLIP.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vptlib.methods import build, tip_adapter
from vptlib.models.backbone import load_clip

C = 4


@pytest.fixture(scope="module")
def tiny_clip(tiny_model):
    return load_clip(tiny_model)


def _pixels(clip, n: int = 6) -> torch.Tensor:
    size = clip.model.config.vision_config.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _text_features(clip, prompts: list[str]) -> torch.Tensor:
    enc = clip.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return F.normalize(clip.model.get_text_features(**enc).pooler_output, dim=-1)


# ------------------------------------------------------------------------------- CoOp
def test_coop_started_from_a_phrase_is_clip_on_that_phrase(tiny_clip):
    """With ctx_init, the context vectors are the phrase's token embeddings: the learned
    prompt then reproduces CLIP's own text features for "<phrase> <name>." exactly."""
    model = build("coop", tiny_clip, C, ctx_init="a brain scan of").eval()
    prompts = [p for ps in model.text_prompts.values() for p in ps]
    assert prompts[2] == "a brain scan of no tumor."
    with torch.no_grad():
        ours = model.class_text()
    torch.testing.assert_close(ours, _text_features(tiny_clip, prompts), rtol=1e-5, atol=1e-5)


def test_coop_trains_only_its_context_and_changes_every_class(tiny_clip):
    torch.manual_seed(0)
    model = build("coop", tiny_clip, C, n_ctx=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["text.embeddings.token_embedding.ctx"]
    ctx = model.text.embeddings.token_embedding.ctx
    assert ctx.shape == (4, tiny_clip.model.config.text_config.hidden_size)
    assert 0.01 < float(ctx.std()) < 0.03  # N(0, 0.02), CoOp's random init
    before = model.class_text().detach()
    model.loss(model(_pixels(tiny_clip)[:C]), torch.arange(C)).backward()
    with torch.no_grad():
        ctx -= 10 * ctx.grad
    assert ((model.class_text() - before).abs().amax(1) > 1e-4).all()  # one shared context: every class moves


# ------------------------------------------------------------------------ Tip-Adapter-F
def test_tip_adapter_logits_are_the_papers_formula(tiny_clip):
    model = build("tip_adapter_f", tiny_clip, C).eval()
    x = _pixels(tiny_clip)
    feats = model.features(x)
    views = torch.stack([F.normalize(feats + 0.05 * torch.randn_like(feats), dim=-1) for _ in range(10)])
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    model.fit_features({"views": (views, labels)})
    keys = F.normalize(views.mean(0), dim=-1)  # build_cache_model: mean over augment_epoch, normalised
    torch.testing.assert_close(model.head.keys.data, keys)
    zero_shot = build("zero_shot", tiny_clip, C).eval()
    with torch.no_grad():
        clip_logits = zero_shot(x)  # 100 * f @ clip_weights (the same prompt ensemble)
        cache = torch.exp(-1.0 * (1.0 - feats @ keys.T)) @ F.one_hot(labels, C).float()
        torch.testing.assert_close(model(x), clip_logits + 1.17 * cache, rtol=1e-4, atol=1e-4)


def test_tip_adapter_search_is_search_hp(tiny_clip):
    betas = tip_adapter.search_grid(7.0, 200)
    assert len(betas) == 200 and betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(0.1 + 199 * 6.9 / 200)
    model = build("tip_adapter_f", tiny_clip, C, search_scale=(3.0, 2.0), search_step=(4, 3))
    tried = []

    def score(split):
        assert split == "val"
        tried.append((float(model.head.beta), float(model.head.alpha)))
        return (0.5 if len(tried) not in (5, 9) else 0.9), 0.0  # points 5 and 9 tie for best

    score.splits = ("train", "val")
    out = model.finalize(score)
    grid = [(b, a) for b in tip_adapter.search_grid(3.0, 4) for a in tip_adapter.search_grid(2.0, 3)]
    np.testing.assert_allclose(tried, grid, rtol=1e-6)  # beta outer, alpha inner, as search_hp loops
    assert (out["tip_beta"], out["tip_alpha"]) == pytest.approx(grid[4])  # the first best stays
    assert (float(model.head.beta), float(model.head.alpha)) == pytest.approx(grid[4])


def test_tip_adapter_cache_travels_with_the_checkpoint(tiny_clip):
    model = build("tip_adapter_f", tiny_clip, C)
    views = F.normalize(torch.randn(10, 7, model.head.in_features), dim=-1)
    model.fit_features({"views": (views, torch.tensor([0, 1, 2, 3, 3, 2, 1]))})
    state = {k: v.clone() for k, v in model.trainable_state().items()}
    assert set(state) == {"head.keys", "head.values", "head.alpha", "head.beta"}
    fresh = build("tip_adapter_f", tiny_clip, C)
    assert fresh.head.keys.shape[0] == 0
    fresh.load_state_dict(state, strict=False)  # the cache takes the checkpoint's seven rows
    x = _pixels(tiny_clip)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


# -------------------------------------------------------------------------------- CLAP
def test_clap_starts_at_zero_shot_and_its_multipliers_are_the_zero_shot_hit_rate(tiny_clip):
    """CLAP's prototypes start (and are anchored) at the raw mean of each class's prompt
    embeddings, unnormalised (``_get_base_text_features``: ``text_embeddings.mean(1)``)."""
    model = build("clap", tiny_clip, C).eval()
    x = _pixels(tiny_clip)
    with torch.no_grad():
        raw = torch.stack(
            [
                tiny_clip.model.get_text_features(**tiny_clip.tokenizer(ps, padding=True, return_tensors="pt"))
                .pooler_output.float()
                .mean(0)
                for ps in model.text_prompts.values()
            ]
        )
    torch.testing.assert_close(model.head.prototypes.detach(), raw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.head.zero_shot, raw, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(C))  # not the unit-norm classifier
    with torch.no_grad():
        f = F.normalize(model.features(x).float(), dim=-1)
        expected = tiny_clip.model.logit_scale.exp() * f @ F.normalize(raw, dim=-1).T
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    views = torch.stack([model.features(x) for _ in range(3)])
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    model.fit_features({"views": (views, labels)})
    with torch.no_grad():
        probs = torch.softmax(model.head(views.flatten(0, 1)), -1).numpy()
    truth = np.tile(labels.numpy(), 3)
    expected = [probs[truth == c, c].mean() for c in range(C)]  # init_lagrangian_multipliers
    np.testing.assert_allclose(model.multipliers.numpy(), expected, rtol=1e-5)


def test_clap_penalty_is_zero_at_start_and_grows_with_the_distance(tiny_clip):
    clap, zs_lp = build("clap", tiny_clip, C), build("clap", tiny_clip, C, constraint="none")
    logits, y = torch.randn(5, C), torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(logits, y)
    torch.testing.assert_close(clap.loss(logits, y), ce)  # prototypes at their zero-shot start
    with torch.no_grad():
        clap.head.prototypes[1] += 0.5
        zs_lp.head.prototypes[1] += 0.5
    gap = 0.25 * clap.head.in_features  # ||0.5 * 1||^2 on one class, averaged over C classes
    torch.testing.assert_close(clap.loss(logits, y), ce + gap / C)
    torch.testing.assert_close(zs_lp.loss(logits, y), ce)  # ZS-LP: cross-entropy alone
    with pytest.raises(ValueError, match="constraint must be one of"):
        build("clap", tiny_clip, C, constraint="l1")


# --------------------------------------------------------------------- the Methods page
def test_the_methods_page_states_each_recipe_as_the_code_holds_it():
    import re
    from pathlib import Path

    from vptlib.methods import clap, coop

    page = (Path(__file__).resolve().parents[2] / "book" / "methods.md").read_text()
    flat = " ".join(page.split())

    def section(title: str) -> str:
        start = flat.index(f"## {title}")
        return flat[start : flat.index("## ", start + 3)]

    def g(x: float) -> str:
        return f"{x:g}"

    text = section("CLAP and the zero-shot-initialised probe")
    assert f"{clap.AUGMENT_VIEWS} augmented views" in text
    assert f"SGD at {g(clap.DEFAULTS.lr)} for {clap.DEFAULTS.epochs} epochs at batch {clap.BATCH_SIZE}" in text
    tip, o = section("Tip-Adapter-F"), tip_adapter.Options()
    assert f"averaged over {tip_adapter.AUGMENT_VIEWS} augmented views" in tip
    d = tip_adapter.DEFAULTS
    assert (
        f"AdamW at {g(d.lr)} (eps {g(tip_adapter.ADAM_EPS)}; weight decay {g(d.weight_decay)}, torch's default, "
        f"which the code keeps) for {d.epochs} epochs at batch {tip_adapter.BATCH_SIZE}" in tip
    )
    assert f"$\\alpha = {g(o.init_alpha)}$ and $\\beta = {g(o.init_beta)}$" in tip
    found = re.search(
        r"(\d+) values of \$\\beta\$ from 0.1 to below (\S+) times (\d+) values of \$\\alpha\$ from 0.1 to below (\S+?),",
        tip,
    )
    assert found and found.groups() == (
        str(o.search_step[0]),
        g(o.search_scale[0]),
        str(o.search_step[1]),
        g(o.search_scale[1]),
    )
    text, d = section("CoOp"), coop.DEFAULTS
    assert f"learns {coop.Options().n_ctx} context vectors" in text and f"N}}(0, {g(coop.INIT_STD)}^2)" in text
    assert f"SGD at {g(d.lr)} (momentum 0.9, weight decay {g(d.weight_decay)})" in text
    assert f"for {d.epochs} epochs at batch {coop.BATCH_SIZE}" in text
