"""Report helpers: parameter merging, tables, figures and commands built from run records."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import matplotlib
import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import yaml

from vptlib import REPO, report
from vptlib.methods import option_names
from vptlib.runs.engine import RunConfig, run, run_config
from vptlib.study import book, notebooks

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def runs(prepared, tiny_model, tmp_path_factory):
    report.setup()  # as every page's first cell does
    out = tmp_path_factory.mktemp("runs")
    for method, kw in [("zero_shot", {"epochs": 0}), ("linear", {"epochs": 3}), ("vpt_shallow", {"epochs": 2})]:
        run(
            method=method,
            data=str(prepared),
            model=str(tiny_model),
            batch_size=16,
            device="cpu",
            out=str(out),
            profile="t",
            progress=False,
            **kw,
        )
    return out


def test_run_config_merges_profile_method_and_overrides():
    hp = {"vpt_deep": {"epochs": 8, "lr": 0.01, "optimizer": "adamw", "prompt_tokens": 7}}
    cfg = run_config("vpt_deep", hp, data="d", lr=0.5, epochs=None, prompt_dropout=None, prompt_tokens=10)
    assert (cfg.epochs, cfg.lr, cfg.optimizer) == (8, 0.5, "adamw")
    assert cfg.options == {"prompt_tokens": 10}
    assert run_config("linear", hp, data="d").options == {}


def test_results_table_one_row_per_method_with_run_ids(runs):
    table = report.results_table(runs, "t")
    assert list(table.method) == ["Zero-shot CLIP", "Linear probe", "VPT-shallow"]
    assert table["run id"].str.match(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{8}$").all()
    assert table["earlier report acc (%, not reproduced)"].tolist() == [29.69, 90.0, 87.81]
    assert "prompt_tokens=5" in table.set_index("method").loc["VPT-shallow", "settings"]


def test_latest_run_wins(runs, prepared, tiny_model):
    first = report.latest_run(runs, "t", "linear")
    run(
        method="linear",
        data=str(prepared),
        model=str(tiny_model),
        epochs=1,
        device="cpu",
        out=str(runs),
        profile="t",
        progress=False,
    )
    second = report.latest_run(runs, "t", "linear")
    assert second != first and second.name > first.name and first.exists()


def test_significance_table_and_sentence(runs):
    sig = report.significance_table(runs, "t")
    assert len(sig) == 2 and set(sig.columns) >= {"p", "Holm p", "significant (Holm, 5%)", "paired 95% CI"}
    assert set(sig["reference"]) == {"VPT-shallow"} and set(sig["vs"]) == {"Zero-shot CLIP", "Linear probe"}
    assert (sig["Holm p"] >= sig["p"]).all()
    text = report.significance_sentence(sig)
    assert text.startswith("Reference: VPT-shallow.")
    assert report.significance_display(sig).index.names == ["reference", "vs"]
    box = report.key_findings(report.results_table(runs, "t"), sig)
    assert "Reference (VPT-shallow)" in box and "Highest mean test accuracy" in box and "Holm" in box


def test_figures_show_what_they_claim(runs, prepared):
    run_dir = report.latest_run(runs, "t", "vpt_shallow")
    table = report.results_table(runs, "t")
    cm = report.plot_confusion(run_dir).axes[0]
    assert sum(int(t.get_text()) for t in cm.texts) == 80  # every test image in one annotated cell
    assert [t.get_text() for t in cm.get_yticklabels()][0] == "glioma"
    bars = report.plot_accuracy(table).axes[0]
    assert [round(p.get_width(), 2) for p in bars.patches] == list(table["test acc (%)"].round(2))
    assert len(report.plot_val_curves(runs, "t").axes[0].get_lines()) == 1  # the one trained by epochs (VPT)
    assert len(report.plot_acc_vs_params(table).axes[0].collections) == len(table)
    norms = report.plot_history(run_dir).axes
    assert all(float(t).is_integer() for t in norms[0].get_xticks())  # whole epochs
    assert len(norms) == 3 and "gradient norm" in norms[2].get_ylabel()  # loss, accuracy, gradient norm
    assert len(norms[2].get_lines()) == 2  # VPT does not clip: no threshold line
    assert len(report.plot_history(report.latest_run(runs, "t", "zero_shot")).axes) >= 1  # a note, not a crash
    probe = report.plot_history(report.latest_run(runs, "t", "linear")).axes[0]  # its search over C
    assert probe.get_xscale() == "log" and probe.get_ylabel() == "validation accuracy"
    assert len(probe.get_lines()[0].get_xdata()) == 96
    assert len(report.sample_grid(prepared, per_class=2).axes) == 4 * 2
    for fig in (
        report.misclassified(run_dir, prepared),
        report.class_distribution(prepared),
        report.plot_sizes(prepared),
    ):
        assert any(ax.has_data() or ax.images for ax in fig.axes)
    assert len(report.per_class_table(run_dir)) == 4
    assert set(report.size_table(prepared).columns) >= {"median width", "share square"}


def test_static_explorer_is_a_table(runs, prepared, monkeypatch):
    monkeypatch.setenv("VPTLIB_STATIC", "1")
    run_dir = report.latest_run(runs, "t", "linear")
    out = report.prediction_explorer(run_dir, prepared)
    assert out.index.name == "image" and list(out.columns[:2]) == [("class", "true"), ("class", "predicted")]
    preds = pd.read_csv(run_dir / "predictions.csv").query("split == 'test'")
    right = out[("class", "true")] == out[("class", "predicted")]
    for shown, every in (
        (out[right], preds[preds.true == preds.pred]),
        (out[~right], preds[preds.true != preds.pred]),
    ):
        assert shown[("class", "true")].nunique() == every.true.nunique()  # every class that has such rows


def test_examples_take_the_classes_in_turn():
    """The test split is sorted by class: the first rows are one class, the examples are not."""
    from vptlib.report.examples import by_class

    rows = pd.DataFrame(
        {
            "path": [f"{c}/{i}.jpg" for c in "abcd" for i in range(5)],
            "true": [c for c in "abcd" for _ in range(5)],
            "pred": ["x"] * 20,
            "prob_x": [0.5 + i / 100 for _ in "abcd" for i in range(5)],
        }
    )
    picked = by_class(rows, 8)
    assert list(picked.true) == list("abcdabcd") and list(picked.path[:1]) == ["a/4.jpg"]  # most confident first
    assert by_class(rows.iloc[:0], 8).empty


def test_recorded_command_reproduces_the_run(runs, capsys):
    from vptlib.cli import main

    run_dir = report.latest_run(runs, "t", "vpt_shallow")
    cfg = json.loads((run_dir / "config.json").read_text())
    cmd = report.run_command(cfg)
    argv = shlex.split(cmd)[2:]
    assert main(["run", *argv, "--quiet"]) == 0
    again = report.latest_run(runs, "t", "vpt_shallow")
    assert again != run_dir
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads((again / "metrics.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def test_profiles_are_valid_and_notebooks_take_only_the_profile_path():
    for template in sorted((REPO / "notebooks").glob("*.ipynb")):
        declared = notebooks.template_parameters(template)
        extra = {
            "experiment": {"method", "model", "options"},  # options: any setting, by name
            "curves": {"model"},
            "variants": {"model"},
            "dataset": {"model"},  # its CLIP-embedding audit
        }.get(template.stem, set())
        assert declared == {"profile_path"} | extra, template.name
    for name in sorted(p.stem for p in (REPO / "profiles").glob("*.yaml")):
        prof = book.load_profile(REPO / "profiles" / f"{name}.yaml")
        for method, hp in prof.hparams.items():
            run_config(method, prof.hparams, data="d")  # every key is a known field or option
            assert method in report.TITLES, method
            assert set(hp) <= set(RunConfig.__dataclass_fields__) | set(option_names(method))


def test_smoke_pages_carry_their_banner_and_full_ones_none(tmp_path):
    from vptlib.study import banner

    gen = tmp_path / "book" / "generated"
    book.guard("smoke", gen)
    book.write_banner(REPO / "profiles" / "smoke.yaml", gen)
    assert "Smoke build" in banner.read_banner(tmp_path)
    assert "BANNER" in (gen / book.OUTPUTS).read_text()  # vptlib's own file: a profile change removes it
    book.guard("full", gen)  # another profile clears the smoke pages, banner included
    assert banner.read_banner(tmp_path) == ""
    book.write_banner(REPO / "profiles" / "full.yaml", gen)
    assert banner.read_banner(tmp_path) == ""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert "vptlib.study.banner" in config["sphinx"]["extra_extensions"]  # plain `jupyter-book build .` too
    assert config["execute"]["execute_notebooks"] == "off"


def test_the_print_banner_is_a_css_string_on_every_page():
    from vptlib.study import banner

    css = banner.print_css('a "quoted" \\ text')
    assert "@page" in css and "@top-center" in css and 'content: "a \\"quoted\\" \\\\ text"' in css
    assert "counter(page)" in css


def test_guard_clears_other_profiles_pages(tmp_path):
    gen = tmp_path / "generated"
    book.guard("smoke", gen)
    (gen / "results.ipynb").write_text("{}")
    book.record_output(gen / "results.ipynb")  # as `vptlib book execute` does
    book.guard("smoke", gen)
    assert (gen / "results.ipynb").exists()
    book.guard("full", gen)
    assert not (gen / "results.ipynb").exists() and (gen / "PROFILE").read_text().strip() == "full"


def test_parse_params_like_papermill():
    assert notebooks.parse_params([["lr", "0.5"], ["prompt_tokens", "10"], ["method", "vpt_deep"]]) == {
        "lr": 0.5,
        "prompt_tokens": 10,
        "method": "vpt_deep",
    }


def test_benchmark_markdown(tmp_path):
    assert "make bench" in report.benchmark_markdown(tmp_path)
    (tmp_path / "cpu-x-tiny.md").write_text("tiny only")
    assert "make bench" in report.benchmark_markdown(tmp_path)  # test-model results are never shown
    (tmp_path / "cpu-x.md").write_text("| a | b |\n")
    assert report.benchmark_markdown(tmp_path).endswith("| a | b |\n")
    (tmp_path / "scaling-cpu-y.md").write_text("| stage | k |\n")  # shown after the table, never as it
    got = report.benchmark_markdown(tmp_path)
    assert got.startswith("From `benchmarks/results/cpu-x.md`") and got.endswith(
        "scaling-cpu-y.md`:\n\n| stage | k |\n"
    )
    shipped = report.benchmark_markdown()  # the repository's own benchmarks/results, wherever report lives
    assert shipped.startswith("From `benchmarks/results/") and "| target | measured | result |" in shipped


def test_short_commit_keeps_dirty_mark():
    assert report.short_commit("0123456789abcdef0123-dirty") == "0123456789ab-dirty"
    assert report.short_commit("0123456789abcdef0123") == "0123456789ab"
    assert report.short_commit("unknown") == "unknown"


def test_attention_dedup_and_reliability_figures(runs, prepared):
    maps = report.attention_maps(runs, "t", prepared, per_class=1)
    assert set(maps["maps"]) == {"linear", "vpt_shallow"}  # zero-shot is not among the compared methods
    assert maps["maps"]["linear"].shape == (4, 7, 7) and len(maps["labels"]) == 4
    assert (maps["prompts"]["linear"] == 0).all() and (maps["prompts"]["vpt_shallow"] > 0).all()
    att = report.plot_attention(maps)
    assert len(att.axes) == 4 * 3 + 1 and att.axes[-1].get_ylabel() == "attention / image's maximum"  # colour bar
    prompt = report.plot_prompt_attention(maps)
    assert len(prompt.axes[0].get_lines()) >= 1
    for fig in (att, prompt):
        assert min(report.style.rendered_font_sizes(fig)) >= 7.5
    bars = [seg for c in prompt.axes[0].collections for seg in c.get_segments()]
    assert min(y for seg in bars for _, y in seg) >= 0  # a share's error bar stops at 0%
    table = report.dedup_table(runs, "t", prepared)
    assert list(table.index) == ["Zero-shot CLIP", "Linear probe", "VPT-shallow"]
    assert (table["raw acc (%)"] == table["de-duplicated acc (%)"]).all()  # the phantoms have no duplicates
    assert len(report.plot_reliability(runs, "t").axes) == 3


def test_every_test_evaluation_is_counted(runs, prepared, tiny_model):
    before = report.test_looks(runs, "t")
    assert before.loc["Linear probe", "settings evaluated on test"] >= 1
    n = before.loc["VPT-shallow", "test evaluations"]
    for seed in (0, 1):  # another setting, two seeds: one more setting, two more evaluations
        run(
            method="vpt_shallow",
            data=str(prepared),
            model=str(tiny_model),
            epochs=1,
            lr=0.02,
            batch_size=16,
            device="cpu",
            out=str(runs),
            profile="t",
            seed=seed,
            progress=False,
        )
    after = report.test_looks(runs, "t")
    assert after.loc["VPT-shallow", "test evaluations"] == n + 2
    assert (
        after.loc["VPT-shallow", "settings evaluated on test"]
        == before.loc["VPT-shallow", "settings evaluated on test"] + 1
    )


def test_concurrent_runs_all_reach_the_ledger(tmp_path):
    """Sweep workers finish at the same moment: every one waits its turn, none is lost or fails."""
    import threading

    from vptlib.runs import ledger, records

    cfgs = [RunConfig(method="linear", data=str(tmp_path), seed=i) for i in range(8)]
    dirs = [records.new_run_dir(tmp_path / "p" / "linear", "0000000" + str(i)) for i in range(8)]
    threads = [threading.Thread(target=ledger.log_test_look, args=(d, c, 0.5)) for d, c in zip(dirs, cfgs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = ledger.read_ledger(tmp_path / "p")
    assert sorted(e["run_id"] for e in entries) == sorted(d.name for d in dirs)
    assert len({e["settings"] for e in entries}) == 1  # seeds aside, one setting


def test_the_methods_page_states_the_statistics_the_code_computes():
    import inspect

    from vptlib.report.comparison import COMPARISON_RULE
    from vptlib.runs.metrics import expected_calibration_error

    page = (Path(__file__).resolve().parents[2] / "book" / "methods.md").read_text()
    stats = page[page.index("## Seeds and statistics") :]
    bins = inspect.signature(expected_calibration_error).parameters["bins"].default
    assert f"({bins} equal-width bins)" in stats
    assert "Wilson" in stats and "Holm" in stats and "McNemar" not in stats and "percentile" not in stats
    assert "Welch-Satterthwaite" in stats and "Welch-Satterthwaite" in COMPARISON_RULE
    assert "reference" in stats and "reference" in COMPARISON_RULE and "Holm" in COMPARISON_RULE


def test_the_methods_page_names_every_loss_and_the_probes_search():
    """Prose that states a procedure is checked against the code that runs it."""
    import re
    import sys

    from vptlib.methods import METHODS, linear
    from vptlib.methods.base import Classifier

    page = (REPO / "book" / "methods.md").read_text()
    training = page[page.index("## Training and selection") : page.index("## Zero-shot CLIP")]
    # A method with its own loss (not the base class's cross-entropy) is named where the loss is stated.
    own_loss = set()
    for spec in METHODS.values():
        module = sys.modules[spec.build.__module__]
        for cls in vars(module).values():
            mine = isinstance(cls, type) and issubclass(cls, Classifier) and cls.__module__ == module.__name__
            if mine and "loss" in vars(cls):
                own_loss.add(spec.title.split(" (")[0])
    assert own_loss and all(name in training for name in own_loss), own_loss
    probe = page[page.index("## Linear probe") : page.index("## Visual prompt tuning")]
    n, lo, hi = re.search(
        r"among (\d+) log-spaced values from \$10\^\{(-?\d+)\}\$\s+to \$10\^\{(-?\d+)\}\$", probe
    ).groups()
    assert (int(n), 10.0 ** int(lo), 10.0 ** int(hi)) == (len(linear.C_GRID), linear.C_GRID[0], linear.C_GRID[-1])
    assert "smaller $C$" in probe and linear.Options().solver == "lbfgs"


def test_the_methods_page_states_each_recipes_grid_and_budget():
    """VPT's grid and tie rule and CLIP-LoRA's budget, as the page states them, match the code and profile."""
    from vptlib.methods import METHODS, clip_lora
    from vptlib.study import tuning
    from vptlib.study.profile import load

    page = (REPO / "book" / "methods.md").read_text()
    full = load(REPO / "profiles" / "full.yaml")
    vpt = page[page.index("## Visual prompt tuning") : page.index("## Full fine-tuning")]
    grid = full.grids["vpt_shallow"]
    assert f"base learning rates from {min(grid['base_lr']):g} to {max(grid['base_lr']):g}" in vpt
    assert f"/ {tuning.BASE_LR_BATCH}$" in vpt and sorted(grid["weight_decay"]) == [0.0, 1e-4, 1e-3, 1e-2]
    assert "smallest learning rate" in vpt and METHODS["vpt_shallow"].defaults.grid_ties == "smallest_lr"
    lora = page[page.index("## CLIP-LoRA") : page.index("## Vision LoRA")]
    prep = full.source["prepare"]
    shots = round(prep["train_per_class"] * (1 - prep["val_fraction"]))
    assert f"{clip_lora.PAPER_ITERATIONS_PER_SHOT} × shots" in lora
    assert f"{shots} training images per class that is {clip_lora.PAPER_ITERATIONS_PER_SHOT * shots:,}" in lora
    assert "clip_lora" in full.grids and "lr" in full.grids["clip_lora"]  # "its learning rate tuned on validation"


def test_the_methods_page_states_each_recipes_clipping_seeds_and_refit():
    """The clipping, the methods run once and the probe's refit, as the page states them, are the code's."""
    from vptlib.methods import METHODS, linear

    page = (REPO / "book" / "methods.md").read_text()
    training = " ".join(page[page.index("## Training and selection") : page.index("## Zero-shot CLIP")].split())
    clipped = {m: s.defaults.grad_clip for m, s in METHODS.items() if s.defaults.grad_clip}
    assert clipped == {"full": 1.0, "wise_ft": 1.0}
    assert "at a global norm of 1.0 for full fine-tuning and WiSE-FT" in training
    assert "grad_norm" not in training and "history.csv" in training
    from vptlib.study.profile import load

    grids = load(REPO / "profiles" / "full.yaml").grids
    assert "10 learning rates × 4 weight decays, on each method's own scale" in training
    tuned = ("full", "wise_ft", "flyp", "text_ce", "vision_lora", "clip_lora")
    assert all((len(grids[m]["lr"]), len(grids[m]["weight_decay"])) == (10, 4) for m in tuned)
    stats = " ".join(page[page.index("## Seeds and statistics") :].split())
    once = {m for m, s in METHODS.items() if not s.uses_seed(s.options().__dict__)}
    assert once == {"zero_shot", "linear", "gda"} and "zero-shot, GDA and the L-BFGS linear probe run once" in stats
    from vptlib.study.profile import load

    words = {3: "three", 5: "five"}
    full, kaggle = (len(load(REPO / "profiles" / f"{n}.yaml").seeds) for n in ("full", "kaggle-full"))
    assert f"({words[full]} in the full profile, {words[kaggle]} in kaggle-full)" in stats
    readme = " ".join((REPO / "docs" / "guide.md").read_text().split())
    smoke = len(load(REPO / "profiles" / "smoke.yaml").seeds)
    assert f"(full: {full}, kaggle-full: {kaggle}, smoke: {smoke};" in readme
    probe = " ".join(page[page.index("## Linear probe") : page.index("## Visual prompt tuning")].split())
    assert linear.Options().refit is False and "does not by default (`refit: true` does)" in probe


# ---- the Results page as issue 26 asked: tables that fit, definitions, one colour per method
def test_headline_table_is_five_columns_with_the_earlier_report(runs):
    table = report.results_table(runs, "t")
    head = report.headline_table(table)
    assert [head.index.name, *head.columns] == report.tables.HEADLINE
    # Each row's tuning effort beside its accuracy: grid points tried on validation, optimiser steps.
    from vptlib.report.loading import grid_size, optimiser_steps
    from vptlib.runs.records import read_history

    for method, group in report.loading.latest_groups(runs, "t").items():
        row = head.loc[report.loading.TITLES[method], report.tables.TUNING]
        steps = [int(read_history(d)["steps"].iloc[-1]) if len(read_history(d)) else 0 for d in group]
        assert row == f"{grid_size(runs, 't', method):,} / {int(sum(steps) / len(steps)):,}", (method, row)
        assert optimiser_steps(group[0]) == steps[0]
    assert f"**{report.tables.TUNING}**" in report.tables.metric_definitions()
    assert head.loc["Linear probe", "earlier report (%)"] == "90.0"
    assert head.loc["Zero-shot CLIP", "earlier report (%)"] == "29.7"
    params = int(table.set_index("method").loc["Linear probe", "trainable params"])
    assert head.loc["Linear probe", "trainable params"] == f"{params:,}"
    big = report.headline_table(table.assign(**{"trainable params": 87_849_733}))
    assert (big["trainable params"] == "87,849,733").all()  # thousands separators
    assert head["test acc. (%)"].str.fullmatch(r"\d+\.\d( ± \d+\.\d)?").all()  # one decimal throughout
    assert head.loc["Zero-shot CLIP", "test acc. (%)"].count("±") == 0  # one run: no spread to show


def test_secondary_table_keeps_one_precision_per_column(runs):
    second = report.secondary_table(report.results_table(runs, "t"))
    assert [second.index.name, *second.columns] == report.tables.SECONDARY
    for col, decimals in (("balanced acc. (%)", 1), ("macro-F1", 3), ("ECE", 3), ("s / epoch", 2)):
        # a fit without epochs (zero-shot, the L-BFGS probe) has no seconds per epoch: "–", never 0.00
        assert second[col].str.fullmatch(rf"\d+\.\d{{{decimals}}}|–").all(), (col, second[col].tolist())
    assert second.loc["Zero-shot CLIP", "s / epoch"] == "–" and second.loc["Zero-shot CLIP", "selected epoch"] == "–"
    quality, cost = (
        report.quality_table(report.results_table(runs, "t")),
        report.cost_table(report.results_table(runs, "t")),
    )
    assert [*quality.columns, *cost.columns] == report.tables.SECONDARY[1:]  # the two cuts, each column once


def test_metric_definitions_state_the_codes_constants():
    import inspect

    from vptlib.runs.metrics import expected_calibration_error, wilson_ci

    text = report.metric_definitions()
    bins = inspect.signature(expected_calibration_error).parameters["bins"].default
    level = inspect.signature(wilson_ci).parameters["level"].default
    assert f"{bins} equal-width" in text and f"{round(100 * level)}% CI" in text
    for column in ("balanced acc.", "macro-F1", "ECE", "selected epoch"):
        assert f"**{column}" in text
    assert "chosen on validation accuracy" in text  # the validated protocol's epoch
    fixed = report.metric_definitions("fixed")
    assert "the last epoch" in fixed and "chosen on validation accuracy" not in fixed


def test_recall_by_class_is_the_runs_own_recall_with_a_colour_bar(runs):
    recall = report.recall_by_class(runs, "t")
    metrics = json.loads((report.latest_run(runs, "t", "vpt_shallow") / "metrics.json").read_text())
    for cls, m in metrics["test"]["per_class"].items():
        assert recall.loc["VPT-shallow", cls] == pytest.approx(100 * m["recall"])
    fig = report.plot_recall_by_class(runs, "t")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "test recall (%)"  # the heat map and its bar


def test_losses_of_every_method_trained_by_epochs(runs):
    axes = report.plot_losses(runs, "t").axes
    assert [a.get_title() for a in axes] == ["training loss", "validation loss"]
    assert [len(a.get_lines()) for a in axes] == [1, 1]  # VPT-shallow; zero-shot and the probe have no epochs


def test_a_method_has_one_colour_in_every_figure(runs):
    from matplotlib.colors import to_rgb

    table = report.results_table(runs, "t")
    want = report.style.color("vpt_shallow")
    bars = report.plot_accuracy(table).axes[0].patches
    assert to_rgb(bars[list(table.method).index("VPT-shallow")].get_facecolor()) == pytest.approx(want)
    assert to_rgb(report.plot_val_curves(runs, "t").axes[0].get_lines()[0].get_color()) == pytest.approx(want)
    assert to_rgb(report.plot_losses(runs, "t").axes[1].get_lines()[0].get_color()) == pytest.approx(want)
    dots = report.plot_acc_vs_params(table).axes[0].collections
    assert to_rgb(dots[list(table.method).index("VPT-shallow")].get_facecolor()[0]) == pytest.approx(want)
    palette = report.style.colors()
    assert len(set(palette.values())) == len(palette)  # no two methods share a colour


def test_adding_a_method_recolours_no_other(monkeypatch):
    """Colours follow the method's name, not its place in the registry."""
    import vptlib.methods as methods

    before = report.style.colors()
    monkeypatch.setattr(methods, "METHODS", {"bitfit": methods.METHODS["linear"], **methods.METHODS})
    monkeypatch.setattr(report.style, "METHODS", methods.METHODS)
    after = report.style.colors()
    assert {m: after[m] for m in before} == before and "bitfit" in after
    assert report.style.color("bitfit") == report.style.color("bitfit")  # decided by the name alone


def test_importing_the_report_changes_no_global_state():
    """No module of vptlib/report sets a theme, rcParams or a pandas option when imported;
    a page does it with report.setup()."""
    import subprocess
    import sys

    code = (
        "import matplotlib as mpl, pandas as pd, pkgutil, importlib\n"
        "rc, col = dict(mpl.rcParams), pd.get_option('display.max_colwidth')\n"
        "import vptlib.report as r\n"
        "for m in pkgutil.iter_modules(r.__path__): importlib.import_module('vptlib.report.' + m.name)\n"
        "changed = sorted(k for k in rc if rc[k] != mpl.rcParams[k] and not k.startswith('backend'))\n"
        "assert not changed and pd.get_option('display.max_colwidth') == col, (changed[:5], col)\n"
        "r.setup(); assert pd.get_option('display.max_colwidth') is None and mpl.rcParams['font.size'] == 10\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]


def test_every_figure_is_readable_at_the_column_width(runs, prepared):
    table = report.results_table(runs, "t")
    vpt, probe = report.latest_run(runs, "t", "vpt_shallow"), report.latest_run(runs, "t", "linear")
    figures = [
        report.plot_history(vpt),
        report.plot_training(probe),
        report.plot_confusion(vpt),
        report.misclassified(vpt, prepared),
        report.misclassified_from(pd.read_csv(vpt / "predictions.csv").head(8), prepared),
        report.sample_grid(prepared),
        report.class_distribution(prepared),
        report.plot_sizes(prepared),
        report.plot_accuracy(table),
        report.plot_acc_vs_params(table),
        report.plot_val_curves(runs, "t"),
        report.plot_losses(runs, "t"),
        report.plot_recall_by_class(runs, "t"),
        report.plot_reliability(runs, "t"),
    ]
    for fig in figures:
        sizes = report.style.rendered_font_sizes(fig)
        assert min(sizes) >= 7.5, (fig.axes[0].get_title(), fig.get_figwidth(), min(sizes))


def test_accuracy_error_bars_stay_within_0_and_100(runs):
    ax = report.plot_accuracy(report.results_table(runs, "t")).axes[0]
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    xs = [x for seg in segments for x, _ in seg]
    assert xs and min(xs) >= 0 and max(xs) <= 100


def test_zero_shot_page_shows_its_prompts_and_no_training_figure(runs):
    run_dir = report.latest_run(runs, "t", "zero_shot")
    assert report.plot_training(run_dir) is None  # no empty panels
    assert "trains nothing" in report.training_note(run_dir) and "class texts" in report.training_note(run_dir)
    table = report.class_prompts(run_dir)
    prompts = json.loads((run_dir / "config.json").read_text())["text_prompts"]
    assert len(table) == sum(len(p) for p in prompts.values())  # every prompt it averaged
    assert set(table["prompt"]) == {p for ps in prompts.values() for p in ps}


def test_a_trained_methods_page_shows_its_curves_and_no_prompts(runs):
    vpt = report.latest_run(runs, "t", "vpt_shallow")
    assert isinstance(report.plot_training(vpt), matplotlib.figure.Figure)
    assert "by epochs" in report.training_note(vpt) and "class texts" not in report.training_note(vpt)
    assert report.class_prompts(vpt) is None
    probe = report.latest_run(runs, "t", "linear")
    assert report.plot_training(probe).axes[0].get_xscale() == "log"  # validation accuracy over C
    assert "over C" in report.training_note(probe)


def test_the_methods_page_states_the_ece_bins_the_code_uses():
    import inspect

    from vptlib.runs.metrics import expected_calibration_error

    bins = inspect.signature(expected_calibration_error).parameters["bins"].default
    assert f"({bins} equal-width bins)" in (REPO / "book" / "methods.md").read_text()


def test_the_conclusion_is_this_builds_numbers(runs):
    table = report.results_table(runs, "t")
    sig = report.significance_table(runs, "t")
    text = report.conclusion(table, sig)
    r = table.set_index("method")
    best = r["test acc (%)"].idxmax()
    assert f"{best}'s, {r.loc[best, 'test acc (%)']:.1f}% (95% CI {r.loc[best, '95% CI']})" in text
    better, worse, _ = report.comparison.signed(sig)
    assert f"{len(better)} of {len(sig)} methods were better and {len(worse)} worse" in text
    assert f"mean ECE {r['ECE'].min():.3f}" in text and "test the pipeline" not in text
    # "Not shown worse" is worded as the test allows, with this design's detectable difference.
    mdd = sig[report.comparison.DETECTABLE]
    assert (
        "Not shown worse is not shown as good" in text and f"at least {mdd.min():.1f} to {mdd.max():.1f} points" in text
    )
    box = report.key_findings(table, sig)
    runner = r["test acc (%)"].sort_values(ascending=False).index[1]
    assert f"not a test: it is not shown better than the runner-up, {runner}" in box
    assert report.conclusion(table, sig, pipeline_only=True).startswith("**These numbers test the pipeline.**")
    empty = pd.DataFrame()
    empty.attrs["missing_reference"] = "vpt_shallow"
    assert "no difference is claimed" in report.conclusion(table, empty)


def test_shown_commands_fit_a_line_and_still_run_as_recorded(runs):
    import shlex

    from vptlib.report.reproducibility import WRAP, wrap_command

    text = report.run_commands_markdown(runs, "t")
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks
    for block in blocks:
        assert all(len(line) <= WRAP for line in block.splitlines()), block
        joined = block.replace("\\\n", "")
        assert shlex.split(joined)[:2] == ["vptlib", "run"]
    cmd = report.run_command(json.loads((report.latest_run(runs, "t", "vpt_shallow") / "config.json").read_text()))
    assert shlex.split(wrap_command(cmd).replace("\\\n", "")) == shlex.split(cmd)


def test_the_environment_lists_every_runtime_requirement_against_its_pin():
    from importlib.metadata import requires

    env = report.environment_table()
    runtime = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requires("vptlib") if "extra ==" not in r}
    assert {n.replace("_", "-") for n in runtime} <= set(env.index)
    assert {"torch", "transformers", "peft", "scikit-learn", "scipy", "numpy", "pillow"} <= set(env.index)
    assert env.loc["torch", "pinned (requirements.txt)"] == "2.13.0" and env.loc["torch", "same"] == "yes"
    assert "pytest" not in env.index and "ruff" not in env.index  # tools decide no number


def test_a_fit_without_epochs_shows_what_it_did_not_empty_training_panels(runs):
    """Zero-shot and the L-BFGS probe fit once: no optimiser settings, no selected epoch, no
    seconds per epoch, no seed paragraph about augmentation, no one-cell grid (issue 45)."""
    from types import SimpleNamespace

    from vptlib.report import experiment

    for method in ("zero_shot", "linear"):
        run_dir = report.latest_run(runs, "t", method)
        shown = report.summary(run_dir)["value"]
        assert "selected epoch (by validation)" not in shown.index and "fit" in shown.index
        assert "lr=" not in shown["settings"] and "optimizer=" not in shown["settings"], shown["settings"]
        timing = report.timing_table(run_dir)
        assert "seconds per epoch" not in [timing.index.name, *timing.columns]
        result = SimpleNamespace(run_dir=run_dir, metrics=json.loads((run_dir / "metrics.json").read_text()))
        assert "does not depend on the seed" in report.seeds_note([result])
        assert report.seed_table([result])["selected epoch"].tolist() == ["–"]
    assert "L-BFGS" in report.summary(report.latest_run(runs, "t", "linear")).loc["fit", "value"]
    untuned = SimpleNamespace(grid=None, axes=[], edges=[])
    assert report.tuning_table(untuned) is None and report.tie_rule_html("zero_shot", untuned) == ""
    assert "trains nothing" in experiment.tuning_note(untuned, "zero_shot")
    trained = report.latest_run(runs, "t", "vpt_shallow")
    assert "selected epoch (by validation)" in report.summary(trained)["value"].index
    assert "lr=" in report.summary(trained).loc["settings", "value"]


def test_wide_tables_get_two_header_rows_and_no_nan():
    from vptlib.report.tables import grouped

    wide = pd.DataFrame(
        {"all: images": [160, 3], "all: accuracy (%)": [16.25, 50.0], "copies: accuracy (%)": [np.nan, 1 / 3]},
        index=pd.Index(["Zero-shot CLIP", "VPT"], name="method"),
    )
    out = grouped(wide)
    assert out.columns.nlevels == 2 and list(out.columns.get_level_values(0)) == ["all", "all", "copies"]
    assert out.iloc[0].tolist() == ["160", "16.2", "–"] and out.iloc[1].tolist() == ["3", "50.0", "0.3"]


def test_the_class_distribution_legend_is_beside_the_bars(prepared):
    fig = report.class_distribution(prepared)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    bars = ax.get_window_extent()
    assert legend.x0 >= bars.x1  # right of the axes: it covers no bar
