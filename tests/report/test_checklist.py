"""The reporting-checklist appendix (vptlib/report/checklist.py) and the support set every run
records (issue 46, items 5 and 6): each answer follows the build's records, not typed text."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from vptlib.data.manifest import read_manifest
from vptlib.report import checklists as cl
from vptlib.runs import records
from vptlib.runs.config import RunConfig
from vptlib.runs.engine import run, run_seeds
from vptlib.study.profile import Profile


@pytest.fixture(scope="module")
def built(prepared, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("checklist-runs")
    prof = Profile(
        profile="c",
        model=str(tiny_model),
        data=str(prepared),
        runs=str(out),
        seeds=[0, 1],
        device="cpu",
        precision="fp32",
        batch_size=16,
        reference="linear",
        hparams={"zero_shot": {"epochs": 0}, "linear": {}, "vpt_shallow": {"epochs": 1}},
    )
    for method, epochs in (("zero_shot", 0), ("linear", 0), ("vpt_shallow", 1)):
        cfg = RunConfig(
            method=method,
            data=str(prepared),
            model=str(tiny_model),
            epochs=epochs,
            batch_size=16,
            device="cpu",
            precision="fp32",
            out=str(out),
            profile="c",
        )
        run_seeds(cfg, [0, 1], progress=False)
    return prof


def test_every_item_is_answered_from_the_records(built):
    table = cl.checklist(built)
    assert list(table.columns) == ["standard", "item", "question", "met", "what the build did", "where"]
    assert set(table.standard) == {cl.NEURIPS, cl.REFORMS, cl.CLAIM}
    assert set(table.met) <= {cl.YES, cl.PARTLY, cl.NO} and (table.met == cl.NO).any()  # unmet items say so
    assert set(table["where"]) <= set(cl.PAGES)
    by = {(r.standard, r.question): r for r in table.itertuples()}
    sizes = read_manifest(built.data).query("excluded == ''")["split"].value_counts()
    splits = by[(cl.CLAIM, "How the data were split?")]._5
    assert f"{sizes['train']} training, {sizes['val']} validation and {sizes['test']} test images" in splits
    support = by[(cl.NEURIPS, "Can the results be reproduced?")]
    assert (
        support.met == cl.YES and "4 of the main study's 4 reported runs record" in support._5
    )  # VPT x 2 seeds, the others once
    seeds = by[(cl.REFORMS, "Uncertainty over seeds and test images?")]._5
    assert "seeds [0, 1]: 1 methods ran once per seed" in seeds and "Zero-shot CLIP" in seeds
    looks = by[(cl.REFORMS, "Was the test set used for any choice?")]._5
    assert "counts 4 reported test evaluations of 3 settings" in looks
    assert by[(cl.NEURIPS, "Open access to data and code?")].met == cl.NO  # phantoms: no real data here


def test_an_answer_changes_with_the_records(built, tmp_path):
    before = cl.checklist(built).set_index("question").loc["Can the results be reproduced?", "what the build did"]
    group = json.loads((records.method_folder(built.runs, "c", "vpt_shallow") / records.GROUP).read_text())
    victim = records.method_folder(built.runs, "c", "vpt_shallow") / group["runs"][0] / records.CONFIG
    saved = victim.read_text()
    try:
        cfg = json.loads(saved)
        cfg.pop("support_set")  # a record written before support sets were recorded
        victim.write_text(json.dumps(cfg))
        after = cl.checklist(built).set_index("question").loc["Can the results be reproduced?"]
        assert (
            after["met"] == cl.PARTLY and "3 of the main study's 4 reported runs record" in after["what the build did"]
        )
    finally:
        victim.write_text(saved)
    assert "4 of the main study's 4 reported runs record" in before


def test_the_markdown_links_each_answer_to_its_page(built):
    text = cl.checklist_markdown(built)
    assert text.count("### ") == 3 and "([methods](../methods.html))" in text and "([dataset](dataset.html))" in text


def test_a_run_records_the_files_of_its_support_set(prepared, tiny_model, tmp_path):
    few = [
        run(
            method="linear",
            data=str(prepared),
            model=str(tiny_model),
            train_per_class=3,
            seed=s,
            device="cpu",
            precision="fp32",
            out=str(tmp_path),
            profile="s",
            progress=False,
        )
        for s in (0, 1)
    ]
    manifest = read_manifest(prepared, include_excluded=True).set_index("path")
    sets = []
    for res in few:
        cfg = json.loads((res.run_dir / records.CONFIG).read_text())
        raw = (res.run_dir / records.SUPPORT).read_bytes()
        assert cfg["support_set"]["sha256"] == hashlib.sha256(raw).hexdigest()
        rows = pd.read_csv(res.run_dir / records.SUPPORT)
        train = rows[rows.split == "train"]
        assert len(train) == cfg["splits"]["train"] == 3 * len(cfg["classes"]) == cfg["support_set"]["train"]
        assert (manifest.loc[rows.path, "sha256"].to_numpy() == rows.sha256.to_numpy()).all()
        assert (manifest.loc[rows.path, "class"].to_numpy() == rows["class"].to_numpy()).all()
        sets.append(set(train.path))
    assert sets[0] != sets[1]  # each seed draws its own support set, and the record says which
