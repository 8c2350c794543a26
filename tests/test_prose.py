"""Sentences of the book that state what the code does, held to the code (issue 42, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vptlib.data.classes import CLASSES
from vptlib.methods import METHODS, coop
from vptlib.methods import tip_adapter as tip
from vptlib.report.loading import TITLES
from vptlib.runs.config import RunConfig
from vptlib.study.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]
INTRO = (ROOT / "book" / "intro.md").read_text()
METHODS_PAGE = (ROOT / "book" / "methods.md").read_text()
FULL = yaml.safe_load((ROOT / "profiles" / "full.yaml").read_text())

# How the introduction names each registered method (a new method must be introduced).
INTRO_NAMES = {
    "zero_shot": "zero-shot CLIP",
    "linear": "linear probe",
    "gda": "**GDA**",
    "prolip": "**ProLIP**",
    "clap": "CLAP",
    "tip_adapter_f": "Tip-Adapter-F",
    "coop": "CoOp",
    "vpt_shallow": "*shallow*",
    "vpt_deep": "*deep*",
    "vision_lora": "vision\n  LoRA",
    "clip_lora": "CLIP-LoRA",
    "clip_svd": "**CLIP-SVD**",
    "full": "full fine-tuning",
    "wise_ft": "WiSE-FT",
    "flyp": "FLYP",
    "text_ce": "text CE",
}


def test_the_introduction_names_every_method_and_study_the_profile_runs():
    assert set(INTRO_NAMES) == set(METHODS), "introduce a new method in book/intro.md and here"
    for method, name in INTRO_NAMES.items():
        assert name in INTRO, (method, TITLES[method])
    assert "PubMedCLIP" in INTRO and "**LAION-2B**" in INTRO and "**BiomedCLIP**" in INTRO
    assert set(FULL["backbones"]) == {"pubmedclip", "laion", "biomedclip"}
    assert "**fixed protocol**" in INTRO and set(FULL["protocols"]) == {"fixed"}


def test_the_seed_sentence_follows_which_runs_depend_on_the_seed():
    once = [m for m in METHODS if not RunConfig(method=m, data="d").varies_with_seed()]
    assert once == ["zero_shot", "linear", "gda"]
    assert "Each method whose result depends on the seed runs with" in INTRO
    assert "zero-shot\n  CLIP, GDA, and the linear probe on the whole training split, do not depend on it" in INTRO
    assert "Each method runs with several seeds" not in INTRO


def test_the_fixed_protocol_is_not_called_clip_loras_or_claps():
    for text in (PROTOCOLS["fixed"], METHODS_PAGE, INTRO, (ROOT / "profiles" / "full.yaml").read_text()):
        assert "protocol of CLIP-LoRA and CLAP" not in text and "validation-free protocol of CLIP-LoRA" not in text
    assert "not CLIP-LoRA's or CLAP's protocol" in PROTOCOLS["fixed"]


def test_coop_ends_its_prompts_with_the_data_sets_class_names():
    for c in CLASSES:
        assert coop.NAMES[c].replace(" ", "") == c  # the folder's name, only spaced as a phrase
    assert 'with "notumor" read as the phrase "no tumor"' in METHODS_PAGE


def test_tip_adapter_f_says_it_trains_on_the_views_that_built_its_keys():
    assert "the same views whose average built its\nkeys" in METHODS_PAGE
    assert "the same views whose average built\nthe keys" in tip.__doc__


def test_the_discussion_describes_the_grids_the_full_profiles_run():
    from vptlib.methods import METHODS as SPECS
    from vptlib.study import profile as profiles
    from vptlib.study.tuning import grid_points

    text = (ROOT / "book" / "discussion.md").read_text()
    for name in ("full", "kaggle-full"):
        prof = profiles.load(ROOT / "profiles" / f"{name}.yaml")
        ref = prof.grids[prof.reference]
        assert f"grid of {len(grid_points(prof, prof.reference))} points" in text
        assert f"({len(ref['base_lr'])} base learning rates × {len(ref['weight_decay'])} weight decays)" in text
        tuned = [m for m in prof.hparams if grid_points(prof, m) and m not in ("vpt_shallow", "vpt_deep")]
        assert {m for m in tuned} == {"full", "wise_ft", "flyp", "text_ce", "vision_lora", "clip_lora"}
        for m in tuned:
            g = prof.grids[m]
            assert (len(g["lr"]), len(g["weight_decay"])) == (10, 4), m
            start = prof.run_config(m).lr
            assert min(g["lr"]) == pytest.approx(start / 50) and max(g["lr"]) == pytest.approx(start * 25), m
        assert "10 learning rates × 4 weight decays" in text and "from 1/50 to 25 times" in text
        fixed = [SPECS[m].title for m in prof.hparams if SPECS[m].fixed_recipe]
        assert fixed == [
            "ProLIP (visual projection)",
            "CLAP (zero-shot-initialised probe)",
            "Tip-Adapter-F",
            "CoOp",
            "CLIP-SVD (singular values)",
        ]
    assert "ProLIP, CLAP, Tip-Adapter-F, CoOp and CLIP-SVD train with their papers'\n  fixed settings" in text


def test_the_methods_page_states_the_grid_size_the_profiles_run():
    assert "10 learning rates × 4 weight decays, on each method's own\nscale" in METHODS_PAGE
    assert "times a weight decay of 0 or 0.1" not in METHODS_PAGE
