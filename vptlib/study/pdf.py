"""``make pdf``: the book as one PDF, printed by headless Chromium, offline.

Jupyter Book's own ``pdfhtml`` builder prints the single-page HTML with pyppeteer, which
downloads a Chromium on first use (the network this project cannot count on); this
prints the same single-page HTML (``jupyter-book build --builder singlehtml``) with the
system's Chromium instead. The banner and the page numbers come from the book's print
CSS (:mod:`vptlib.study.banner`), so every page carries them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from vptlib import atomic
from vptlib.errors import UserError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Headless and offline: no GPU, no sandbox (containers), no update or sync traffic, and every
# host name unresolvable, so nothing is fetched. The browser test drives Chromium the same way.
HEADLESS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
TIMEOUT_S = 600


def chromium() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        raise UserError(
            "make pdf prints with Chromium, which is not installed: run sudo make browser (Debian's chromium)"
        )
    return found


REFRESH = re.compile(r"""http-equiv=["']Refresh["']\s+content=["']\d+;\s*url=([^"']+)["']""", re.I)


def page_to_print(html: Path) -> Path:
    """The single-page book behind ``html``, where its relative links resolve.

    Jupyter Book's ``index.html`` only redirects to the root page (``book/intro.html``), and
    Sphinx's singlehtml builder writes that page's links (``_static/...``, ``_images/...``)
    relative to the output folder, not to ``book/``: printed where it lies, it would lose
    its styles and figures. So the redirect is followed and the page is copied up to the
    folder that holds ``_static``."""
    match = REFRESH.search(html.read_text(encoding="utf-8", errors="replace")[:2000])
    page = (html.parent / match.group(1)).resolve() if match else html
    root = next((d for d in (page.parent, *page.parents) if (d / "_static").is_dir()), page.parent)
    if root == page.parent:
        return page
    flat = root / "_vptlib-print.html"
    atomic.write_bytes(flat, page.read_bytes())
    return flat


def print_pdf(html: str | Path, out: str | Path, timeout: float = TIMEOUT_S) -> Path:
    """Print ``html`` (the single-page book, or its index) to ``out``, written atomically."""
    html, out = Path(html).resolve(), Path(out)
    if not html.is_file():
        raise UserError(f"{html} is missing: make pdf builds it from the executed pages; run make book first")
    browser = chromium()
    html = page_to_print(html)
    with tempfile.TemporaryDirectory(prefix="vptlib-pdf-") as tmp:
        pdf = Path(tmp) / "book.pdf"
        cmd = [
            browser,
            *HEADLESS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--allow-file-access-from-files",
            "--no-pdf-header-footer",  # the book's own @page boxes say what each page needs
            "--virtual-time-budget=30000",  # let MathJax typeset before printing
            f"--print-to-pdf={pdf}",
            html.as_uri(),
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"Chromium did not finish printing {html} within {timeout:.0f} s") from None
        if not pdf.is_file() or pdf.read_bytes()[:5] != b"%PDF-":
            tail = "\n".join((res.stderr or "").strip().splitlines()[-5:])
            raise UserError(f"Chromium printed no PDF of {html} (exit {res.returncode}):\n{tail}")
        atomic.write_bytes(out, pdf.read_bytes())
    return out
