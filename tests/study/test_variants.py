"""Studies beside the main one: another backbone and the validation-free protocol, each a
profile derived from the main one (Profile.variant), run as ordinary runs in folders of their
own and compared with the main study method by method on the same test images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vptlib.errors import UserError
from vptlib.models.offline import write_tiny_clip
from vptlib.report import variants as report_variants
from vptlib.report.loading import latest_groups, seed_correct
from vptlib.runs import records
from vptlib.runs.metrics import holm, paired_difference
from vptlib.study import profile as profile_mod
from vptlib.study.profile import Profile, backbone_folders
from vptlib.study.protocols import PROTOCOLS
from vptlib.study.tuning import TUNING, run_method
from vptlib.study.variants import describe, run_variants, variants

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "profiles" / "smoke.yaml").read_text()


def _profile(prepared, model, other, runs) -> Profile:
    return Profile(
        profile="v",
        model=str(model),
        data=str(prepared),
        runs=str(runs),
        seeds=[0, 1],
        device="cpu",
        precision="fp32",
        batch_size=16,
        hparams={"vpt_shallow": {"epochs": 3, "lr": 0.01, "optimizer": "adamw"}},
        grids={"vpt_shallow": {"lr": [0.01, 0.03]}},
        backbones={"b": {"model": str(other), "methods": ["zero_shot", "vpt_shallow"]}},
        protocols={"fixed": {"methods": ["linear", "vpt_shallow"], "hparams": {"vpt_shallow": {"epochs": 2}}}},
    )


def test_a_variant_is_a_profile_of_its_own():
    p = profile_mod.load(ROOT / "profiles" / "full.yaml")
    b, f = p.variant("backbone", "pubmedclip"), p.variant("protocol", "fixed")
    assert (b.profile, f.profile) == ("full-backbone-pubmedclip", "full-protocol-fixed")
    assert (
        b.model == "flaviagiammarino/pubmed-clip-vit-base-patch32"
        and b.revision == p.backbones["pubmedclip"]["revision"]
    )
    assert b.grids == p.grids and b.run_config("vpt_deep").select == "val"  # a backbone is tuned as the main study
    assert f.model == p.model and f.grids == {} and f.run_config("vpt_deep").select == "last"
    assert (f.seeds, f.data, f.reference, f.grid_seed) == (p.seeds, p.data, p.reference, p.grid_seed)
    assert not (b.backbones or b.protocols or b.sweeps or f.sweeps)
    with pytest.raises(UserError, match="has no backbone"):
        p.variant("backbone", "nope")


def test_backbone_folders_override_the_hub_ids(monkeypatch):
    assert backbone_folders("a=models/x, b=/y") == {"a": "models/x", "b": "/y"}
    with pytest.raises(UserError, match="name=folder"):
        backbone_folders("models/x")
    with pytest.raises(UserError, match="names b twice"):
        backbone_folders("b=models/x,b=models/y")
    monkeypatch.setenv(profile_mod.BACKBONES_ENV, "pubmedclip=models/tiny-clip-b")
    p = profile_mod.load(ROOT / "profiles" / "full.yaml")
    assert p.backbones["pubmedclip"]["model"] == "models/tiny-clip-b" and p.backbones["pubmedclip"]["revision"] is None
    monkeypatch.setenv(profile_mod.BACKBONES_ENV, "other=models/x")
    with pytest.raises(UserError, match="does not have; its backbones: pubmedclip"):
        profile_mod.load(ROOT / "profiles" / "full.yaml")


def test_a_dry_run_cuts_every_variants_epochs(monkeypatch):
    from vptlib.methods import METHODS

    monkeypatch.setenv(profile_mod.DRY_RUN_ENV, "1")
    p = profile_mod.load(ROOT / "profiles" / "full.yaml")
    for v in variants(p):
        assert v.profile.profile.startswith("full-dry-run-")
        for m in v.methods:
            if METHODS[m].trains:  # zero-shot and GDA train nothing
                assert v.profile.run_config(m).epochs == 1, (v.label, m)


BAD = {
    "unknown protocol": ("profile: smoke\n", "profile: smoke\nprotocol: loose\n", "protocol must be one of"),
    "fixed with grids": ("profile: smoke\n", "profile: smoke\nprotocol: fixed\n", "remove grids"),
    "own protocol again": ("  fixed:\n    methods: [linear,", "  validated:\n    methods: [linear,", "other than this"),
    "reference missing": (
        "methods: [zero_shot, linear, coop, vpt_shallow, clip_lora]",
        "methods: [zero_shot, linear]",
        "must include the reference",
    ),
    "unknown method": (
        "methods: [zero_shot, linear, coop,",
        "methods: [zero_shot, lineer, coop,",
        "unknown or repeated",
    ),
    "unknown key": ("model: models/tiny-clip-b", "model: models/tiny-clip-b\n    seeds: [3]", "unknown key(s) seeds"),
    "branch revision": ("model: models/tiny-clip-b", "model: models/tiny-clip-b\n    revision: main", "40-character"),
    "bad variant setting": (
        "methods: [linear, tip_adapter_f, vpt_shallow, vpt_deep, clip_lora, wise_ft]",
        "methods: [linear, vpt_shallow]\n    hparams: {vpt_shallow: {optimizer: adam}}",
        "protocols.fixed: hparams.vpt_shallow: --optimizer must be sgd or adamw",
    ),
    "early stopping under last": (
        "methods: [linear, tip_adapter_f, vpt_shallow, vpt_deep, clip_lora, wise_ft]",
        "methods: [linear, vpt_shallow]\n    hparams: {vpt_shallow: {early_stopping: 2}}",
        "cannot go with --select last",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_variants_are_refused_with_one_line(tmp_path, case):
    old, new, needle = BAD[case]
    text = SMOKE.replace(old, new, 1)
    assert text != SMOKE
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        profile_mod.load(path)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def study(prepared, pretrained_tiny, tmp_path_factory):
    other = write_tiny_clip(tmp_path_factory.mktemp("other-clip"), seed=3)
    p = _profile(prepared, pretrained_tiny, other, tmp_path_factory.mktemp("runs"))
    for m in ("zero_shot", "linear", "vpt_shallow"):
        run_method(p, m, progress=False)
    return p, run_variants(p, progress=False)


def test_variants_run_as_their_protocol_says(study):
    p, done = study
    assert set(done) == {v.label for v in variants(p)}
    fixed, backbone = p.variant("protocol", "fixed"), p.variant("backbone", "b")
    runs = latest_groups(fixed.runs, fixed.profile)
    assert set(runs) == {"linear", "vpt_shallow"} and len(runs["vpt_shallow"]) == 2
    for d in runs["vpt_shallow"]:  # the variant's own epochs, the last one kept, nothing tuned
        m, cfg = (json.loads((d / f).read_text()) for f in (records.METRICS, records.CONFIG))
        assert m["best_epoch"] == m["epochs_run"] == 2 and cfg["select"] == "last"
    assert not (records.method_folder(fixed.runs, fixed.profile, "vpt_shallow") / TUNING).exists()
    assert json.loads((runs["linear"][0] / records.METRICS).read_text())["linear_probe_curve"] == []
    tuned = records.method_folder(backbone.runs, backbone.profile, "vpt_shallow") / TUNING
    assert tuned.is_file() and len(tuned.read_text().splitlines()) == 3  # the main grid, on the other CLIP
    cfg = json.loads((latest_groups(backbone.runs, backbone.profile)["vpt_shallow"][0] / records.CONFIG).read_text())
    assert Path(cfg["model"]).resolve() == Path(backbone.model).resolve()
    assert "Runs: `" in describe(p) and PROTOCOLS["fixed"] in describe(p)


def test_each_method_is_compared_on_the_same_test_images(study):
    p, _ = study
    table = report_variants.versus(p, "protocol")
    assert list(table.method) == ["Linear probe", "VPT-shallow"]
    fixed = p.variant("protocol", "fixed")
    mine, main = latest_groups(fixed.runs, fixed.profile), latest_groups(p.runs, p.profile)
    d = paired_difference(seed_correct(mine["vpt_shallow"]), seed_correct(main["vpt_shallow"]))
    row = table[table.method == "VPT-shallow"].iloc[0]
    assert row["difference (points)"] == round(100 * d["diff"], 2) and row.p == d["p_value"]
    assert np.allclose(table["Holm p"], holm(list(table.p)))
    assert set(report_variants.versus(p, "backbone").method) == {"Zero-shot CLIP", "VPT-shallow"}
    grid = report_variants.method_by_variant(p, "backbone")
    assert list(grid.columns) == [f"main ({Path(p.model).name})", f"b ({Path(p.variant('backbone', 'b').model).name})"]
    assert list(grid.index) == ["Zero-shot CLIP", "VPT-shallow"]  # what the backbone runs: there is a comparison
    protocols = report_variants.method_by_variant(p, "protocol")
    assert list(protocols.index) == ["Linear probe", "VPT-shallow"]
    fig = report_variants.plot_versus(p, "protocol")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["Linear probe", "VPT-shallow"]
    sentence = report_variants.versus_sentence(table, "protocol")
    assert f"Of {len(table)} method comparisons" in sentence
    assert "validated" in report_variants.protocol_note(p) and "fixed" in report_variants.protocol_definitions(p)


def test_pairing_is_checked_for_every_method_not_only_the_first(study):
    """Before: only the first method both studies ran was checked; a later one scored on other
    test images was paired image by image with the main study's anyway."""
    import pandas as pd

    p, _ = study
    fixed = p.variant("protocol", "fixed")
    run = latest_groups(fixed.runs, fixed.profile)["vpt_shallow"][0]  # the second method compared
    preds = run / records.PREDICTIONS
    kept = preds.read_bytes()
    df = pd.read_csv(preds, keep_default_na=False)
    df.loc[df.index[df.split == "test"][0], "path"] = "images/test/glioma/another-image.jpg"
    try:
        preds.write_text(df.to_csv(index=False))
        with pytest.raises(UserError, match="different test images"):
            report_variants.versus(p, "protocol")
    finally:
        preds.write_bytes(kept)


def test_without_variants_the_sections_say_so(prepared, pretrained_tiny, tmp_path):
    p = Profile(profile="none", model=str(pretrained_tiny), data=str(prepared), runs=str(tmp_path))
    assert report_variants.versus(p, "backbone").empty
    assert "nothing to compare" in report_variants.versus_sentence(report_variants.versus(p, "protocol"), "protocol")


def test_the_methods_page_states_the_protocols_as_the_code_holds_them():
    from vptlib.methods import linear, tip_adapter, wise_ft

    page = " ".join((ROOT / "book" / "methods.md").read_text().split())
    text = page[page.index("## Two protocols") : page.index("## Seeds and statistics")]
    o = tip_adapter.Options()
    assert f"scikit-learn's default, {linear.FIXED_C} (`--fixed-c`)" in text
    assert f"alpha {wise_ft.FIXED_ALPHA:g}, the paper's own fixed row" in text
    assert f"it trained with ({o.init_alpha:g} and {o.init_beta:g})" in text
    full = profile_mod.load(ROOT / "profiles" / "full.yaml")
    assert "`runs/<profile>-protocol-fixed/`" in text and "fixed" in full.protocols
    assert f"`runs/full-backbone-{next(iter(full.backbones))}/`" in page
