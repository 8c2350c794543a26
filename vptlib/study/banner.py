"""A Sphinx extension (listed in ``_config.yml``): the build's banner on every page.

The banner is the text :func:`vptlib.study.book.write_banner` left beside the generated
pages (``book/generated/BANNER``). In the HTML it is the theme's announcement bar; in
print (``make pdf``) it is a CSS page-margin box, so Chromium repeats it at the top of
every page of the PDF, with the page number at the bottom. No banner file, or an empty
one: nothing is added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GENERATED = Path("book") / "generated"
CSS = "vptlib-banner.css"


def read_banner(srcdir: str | Path) -> str:
    path = Path(srcdir) / GENERATED / "BANNER"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def print_css(text: str) -> str:
    """The print rules that put ``text`` atop every page (``@page`` margin boxes)."""
    quoted = json.dumps(text)  # a CSS string: double quotes and backslashes escaped alike
    return (
        "@page {\n"
        "  margin: 24mm 14mm 16mm 14mm;\n"
        f"  @top-center {{ content: {quoted}; font: 8pt sans-serif; color: #7a4100; }}\n"
        '  @bottom-right { content: counter(page) " / " counter(pages); font: 8pt sans-serif; }\n'
        "}\n"
    )


def _add_banner(app: Any, config: Any) -> None:
    text = read_banner(app.srcdir)
    if not text:
        return
    options = dict(config.html_theme_options or {})
    options["announcement"] = text
    config.html_theme_options = options
    static = Path(app.doctreedir).parent / "vptlib-banner"
    static.mkdir(parents=True, exist_ok=True)
    (static / CSS).write_text(print_css(text), encoding="utf-8")
    config.html_static_path = [*config.html_static_path, str(static)]
    app.add_css_file(CSS, media="print")


# Said where a build wrote no facts (a plain `jupyter-book build .` before any make book).
NO_FACTS = {
    "study_model": "the profile's CLIP model",
    "study_data": 'the profile\'s images (the full profile: the public Kaggle "Brain Tumor MRI Dataset")',
    "train_images": "the profile's",
    "val_share": "a share",
    "test_images": "the profile's",
    "one_test_image": "a share of a percentage point",
    "ci_near_90": "an interval as wide as the test split allows",
}


def read_facts(srcdir: str | Path) -> dict[str, str]:
    path = Path(srcdir) / GENERATED / "FACTS.json"
    try:
        return {**NO_FACTS, **json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError):
        return dict(NO_FACTS)


def _add_facts(app: Any, config: Any) -> None:
    """The build's facts as MyST substitutions ({{ test_images }} in a page)."""
    config.myst_substitutions = {**(config.myst_substitutions or {}), **read_facts(app.srcdir)}


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _add_banner)
    app.connect("config-inited", _add_facts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
