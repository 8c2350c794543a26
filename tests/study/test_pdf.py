"""make pdf's printer: the single page found behind the redirect, the banner on every page, clear errors."""

from __future__ import annotations

import shutil

import pytest

from vptlib.errors import UserError
from vptlib.study import banner, pdf


def _site(tmp_path, text: str):
    """A singlehtml layout as Jupyter Book writes it: index.html redirects into book/."""
    root = tmp_path / "singlehtml"
    (root / "_static").mkdir(parents=True)
    (root / "_static" / "vptlib-banner.css").write_text(banner.print_css(text))
    (root / "book").mkdir()
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    body = "".join(f"<h2>Chapter {i}</h2><p>{'Words. ' * 400}</p>" for i in range(4))
    (root / "book" / "intro.html").write_text(
        '<html><head><link media="print" rel="stylesheet" href="_static/vptlib-banner.css" /></head>'
        f"<body>{body}</body></html>"
    )
    return root


def test_the_redirect_is_followed_and_the_page_moved_where_its_links_resolve(tmp_path):
    root = _site(tmp_path, "x")
    page = pdf.page_to_print(root / "index.html")
    assert page.parent == root and (page.parent / "_static" / "vptlib-banner.css").is_file()
    assert page.read_bytes() == (root / "book" / "intro.html").read_bytes()


@pytest.mark.skipif(not any(shutil.which(b) for b in pdf.BROWSERS), reason="no Chromium: sudo make browser")
def test_every_printed_page_carries_the_banner_and_its_number(tmp_path):
    from pypdf import PdfReader

    root = _site(tmp_path, 'Smoke build: "quoted" on every page')
    out = pdf.print_pdf(root / "index.html", tmp_path / "out" / "book.pdf")
    pages = PdfReader(out).pages
    assert len(pages) >= 3
    for i, page in enumerate(pages):
        text = page.extract_text()
        assert 'Smoke build: "quoted" on every page' in text and f"{i + 1} / {len(pages)}" in text


def test_without_chromium_or_the_page_the_error_says_what_to_run(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="run make book first"):
        pdf.print_pdf(tmp_path / "missing.html", tmp_path / "b.pdf")
    root = _site(tmp_path, "x")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="sudo make browser"):
        pdf.print_pdf(root / "index.html", tmp_path / "b.pdf")
    assert not (tmp_path / "b.pdf").exists()
