"""The book's Sphinx extensions: static HTML (no Thebe, no print-as-PDF entry), author-year
References, and the facts the static pages state about this build."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

from vptlib.data.phantoms import write_phantoms
from vptlib.study import banner, book, citations, static_html
from vptlib.study.profile import load


def _script(name, body=None):
    return SimpleNamespace(filename=name, attributes={"body": body} if body else {}, __str__=lambda self: name or "")


def test_thebe_goes_and_a_repeated_inline_script_is_kept_once():
    thebe = 'const THEBE_JS_URL = "https://unpkg.com/thebe"; const thebe_selector = ".thebe"'
    toggle = "var togglebuttonSelector = '.toggle';"
    scripts = [
        _script("_static/documentation_options.js"),
        _script(None, thebe),
        _script("_static/sphinx-thebe.js"),
        _script(None, toggle),
        _script(None, thebe),  # the second declaration: a SyntaxError in every page's console
        _script(None, toggle),
    ]
    kept = static_html.keep_scripts(scripts)
    assert [s.filename for s in kept] == ["_static/documentation_options.js", None]
    assert kept[1].attributes["body"] == toggle


def test_the_print_dialog_is_not_offered_as_the_pdf():
    buttons = [
        {
            "type": "group",
            "label": "download-buttons",
            "buttons": [
                {"label": "download-notebook-button", "text": ".ipynb"},
                {"label": "download-pdf-button", "text": ".pdf", "type": "javascript"},
            ],
        },
        {"type": "group", "label": "only-print", "buttons": [{"label": "download-pdf-button"}]},
        {"label": "fullscreen-button"},
    ]
    out = static_html.drop_print_button(buttons)
    assert [b["label"] for b in out] == ["download-buttons", "fullscreen-button"]  # an emptied group goes
    assert [b["text"] for b in out[0]["buttons"]] == [".ipynb"]


def _entry(key, authors, year):
    people = [SimpleNamespace(last_names=[a]) for a in authors]
    return SimpleNamespace(key=key, persons={"author": people}, fields={"year": year, "title": key})


def test_references_are_labelled_as_the_text_cites_them():
    entries = [
        _entry("jia", ["Jia", "Tang", "Chen"], "2022"),
        _entry("zanella", ["Zanella", "Ben Ayed"], "2024"),
        _entry("holm", ["Holm"], "1979"),
        _entry("wang1", ["Wang", "Li", "Xu"], "2024"),
        _entry("wang2", ["Wang", "Zhou", "Ma"], "2024"),
    ]
    assert citations.labels(entries) == [
        "Jia et al. 2022",
        "Zanella and Ben Ayed 2024",
        "Holm 1979",
        "Wang et al. 2024a",
        "Wang et al. 2024b",
    ]


def test_a_smoke_build_never_states_the_real_studys_sizes_or_model(tmp_path):
    from vptlib.data.options import PrepareOptions
    from vptlib.data.prepare import prepare

    src = write_phantoms(tmp_path / "src", per_class=6, size=64)
    prepare(PrepareOptions(src, tmp_path / "data", train_per_class=3, test_per_class=2, val_fraction=0.34))
    smoke = dataclasses.replace(load("profiles/smoke.yaml", check_methods=False), data=str(tmp_path / "data"))
    facts = book.book_facts(smoke)
    from vptlib.report.dataset import KAGGLE_FILES, files_context_markdown, shape_context_markdown

    assert shape_context_markdown(tmp_path / "data").startswith("These images are synthetic phantoms")
    assert files_context_markdown(tmp_path / "data").startswith("These phantoms")
    (src / "PHANTOMS.txt").unlink()  # the same set, as if drawn from real images: the Kaggle facts
    assert files_context_markdown(tmp_path / "data") == KAGGLE_FILES
    (src / "PHANTOMS.txt").write_text("phantoms")
    assert facts["test_images"] == "8" and facts["train_images"] == "12"
    assert "synthetic phantoms" in facts["study_data"] and "tiny CLIP" in facts["study_model"]
    full = book.book_facts(load("profiles/full.yaml", check_methods=False))
    assert full["study_model"].startswith("CLIP ViT-B/32") and "test_images" not in full  # no data: no sizes
    # the static pages use them, and the extension fills what a build did not write
    for page in ("book/intro.md", "book/discussion.md"):
        text = Path(page).read_text()
        assert "{{ test_images }}" in text and "320" not in text and "480" not in text, page
    gen = tmp_path / "book" / "generated"
    gen.mkdir(parents=True)
    (gen / "FACTS.json").write_text(json.dumps(facts))
    assert banner.read_facts(tmp_path)["test_images"] == "8"
    assert set(banner.read_facts(tmp_path / "none")) == set(banner.NO_FACTS)
