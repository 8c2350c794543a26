"""The report as a reader gets it: a smoke `make book` in a temporary copy, checked in headless Chromium.

Slow (a few minutes): it executes every real notebook on the tiny model and phantoms.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from book_repo import ROOT, book_pages, copy_repo, make

from vptlib.methods import METHODS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the working tree (tracked and new files), sharing .venv and the tiny model."""
    return copy_repo(tmp_path_factory.mktemp("book") / "repo")


@pytest.fixture(scope="module")
def real_source(repo) -> Path | None:
    """Real brain MRI for the book (a subset of ../shared/data, with its leakage), so every page
    renders real images in CI; None where the shared images are absent (never under CI)."""
    from helpers import REAL, real_subset

    if not (REAL / "Training").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real images missing: {REAL}; CI builds the book on them")
        return None
    return real_subset(repo.parent / "real-src", per_class=40)


@pytest.fixture(scope="module")
def built(repo, real_source) -> subprocess.CompletedProcess:
    """The smoke book, on real images where they are here (DATA=), else on the phantoms."""
    t0 = time.monotonic()
    res = make(repo, "book", "PROFILE=smoke", *([f"DATA={real_source}"] if real_source else []))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    print(f"smoke book built in {time.monotonic() - t0:.0f} s")
    return res


def test_book_lands_at_index_html(repo, built):
    assert (repo / "_build" / "html" / "index.html").is_file()
    *_, timed, last = built.stdout.strip().splitlines()
    assert last == f"HTML report: {repo}/_build/html/index.html"
    assert re.fullmatch(
        r"make book PROFILE=smoke: \d+ s wall time(, beside other work keeping [\d.]+ cores busy)?", timed
    )
    # The record says how busy other work kept the machine (here: the other test worker).
    record = json.loads((repo / "_build" / "book-time-smoke.json").read_text())
    assert isinstance(record["other_work_cores"], float) and 0 <= record["other_work_cores"] <= os.cpu_count()
    # ... and how long each stage took (the Makefile's marks), adding up to the whole.
    assert set(record["stages"]) == {"install", "models", "checks", "pages", "html"}
    assert abs(sum(record["stages"].values()) - record["seconds"]) <= 5
    for m in METHODS:
        assert f"book/generated/experiments/{m}.ipynb" in built.stdout


def test_pages_are_offline_and_links_resolve(repo, built):
    html = repo / "_build" / "html"
    for page in book_pages(repo):
        text = page.read_text()
        # No script, stylesheet or image from the network: the report renders offline.
        remote = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//[^"]+"', text)
        assert not remote, (page, remote)
        for href in re.findall(r'href="([^"#?]+)', text):
            if urlparse(href).scheme or href.startswith("mailto"):
                continue
            target = (page.parent / unquote(href)).resolve()
            assert target.exists(), f"{page.relative_to(html)} links to missing {href}"


def test_every_page_is_built_on_real_mri_in_ci(repo, built, real_source):
    """With the shared images here, the book's data are real MRI, drawn by copy cluster (checked
    on the first build, before later tests rebuild it): the banner says so, the Dataset page finds no test image with a copy in training, and the
    official split's copies are measured on the Results page."""
    if real_source is None:
        pytest.skip("real images absent: the book was built on phantoms")
    html = {p.name: p.read_text(errors="replace") for p in book_pages(repo)}
    dataset = next(t for n, t in html.items() if n.startswith("dataset"))
    assert "Its images are real" in dataset
    assert "none has a copy in training or validation" in dataset
    assert "with a copy in Training" in dataset
    results = next(t for n, t in html.items() if n.startswith("results"))
    assert "copies of a training image" in results and "the rest" in results and "acc. (%)" in results
    # Real images: the pages state the Kaggle data's facts, not the phantoms' (generated from the data)
    assert (
        "another source dataset than the tumour images, so the" in dataset and "are synthetic phantoms" not in dataset
    )
    assert "a stratified subset of the public Kaggle" in html["intro.html"]
    import pandas as pd

    manifest = pd.read_csv(repo / "data" / "smoke" / "manifest.csv", dtype=str, keep_default_na=False)
    used = manifest[manifest.split != "skipped"]
    assert set(used.width) == {"224"} and set(used.source.str.split("/").str[0]) == {"Training", "Testing"}


def test_experiment_pages_have_their_own_titles(repo, built):
    titles = set()
    for m in METHODS:
        page = (repo / "_build" / "html" / "book" / "generated" / "experiments" / f"{m}.html").read_text()
        titles.add(re.search(r"<title>(.*?)</title>", page, re.S).group(1).strip())
    assert len(titles) == len(METHODS), titles
    assert not any(t.startswith("Experiment") for t in titles)


def _chrome(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    from vptlib.study.pdf import HEADLESS

    for flag in (*HEADLESS, "--disable-sync", "--disable-quic", f"--user-data-dir={tmp}", "--window-size=1280,1600"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for the error check
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def require_browser() -> None:
    """Skip with one line where chromium cannot be had (no root), but never under CI."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    msg = "chromium/chromedriver missing: enable the browser check with `sudo make browser`"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI must run it)")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_browser()
    driver = _chrome(tmp_path_factory.mktemp("chrome-profile"))
    yield driver
    driver.quit()


def _wait_loaded(driver, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("return document.readyState") == "complete" and driver.execute_script(
            "return [...document.images].every(i => i.complete)"
        ):
            return
        time.sleep(0.2)


# Tables wider than the article column: every table must fit it whole at 1280 px (wrapped,
# shortened, split or transposed), never behind a sideways scroll; and code blocks wrap.
WIDE_TABLES = """
const column = (document.querySelector('article.bd-article') || document.querySelector('main')).getBoundingClientRect();
const out = [];
for (const t of document.querySelectorAll('article table')) {
  const width = Math.max(t.scrollWidth, t.getBoundingClientRect().width);
  if (width > column.width + 1) out.push([Math.round(width), Math.round(column.width), (t.innerText || '').slice(0, 60)]);
}
const pres = [...document.querySelectorAll('article pre')].filter(p => p.scrollWidth > p.clientWidth + 1);
return [out, pres.map(p => p.innerText.slice(0, 40))];
"""

# Numbers and words broken across lines inside a table cell: each word and each number must lie
# on one line ("0.2" / "02" for 0.202 is the failure); a break between punctuation and a word,
# or at a <wbr> in a path, is a break between tokens.
BROKEN_TOKENS = """
const broken = [];
for (const cell of document.querySelectorAll('article td, article th')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    // a word, or a number with its decimals and thousands (0.202, 1,234): a line may break at
    // a space, a hyphen or between punctuation and a word (q_proj, [7.0, a/b), never inside one
    const re = /[A-Za-z0-9\\u00C0-\\u024F]+(?:[.,][0-9]+)*/g;
    let m;
    while ((m = re.exec(node.data))) {
      const r = document.createRange();
      r.setStart(node, m.index);
      r.setEnd(node, m.index + m[0].length);
      const tops = new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
}
return broken.slice(0, 10);
"""

# The width of a printed page's content (Chromium's default Letter, 8.5 in at 96 px, less the
# 14 mm margins of vptlib.study.banner.print_css): make pdf lays the tables out at this width.
PRINT_WIDTH = round(8.5 * 96 - 2 * 14 / 25.4 * 96)


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# Images of the article that are not in a numbered, captioned figure.
UNCAPTIONED = """
return [...document.querySelectorAll('article img')].filter(i => {
  const f = i.closest('figure');
  return !(f && f.querySelector('.caption-number') && f.querySelector('figcaption').innerText.trim().length > 12);
}).map(i => i.src.split('/').pop());
"""


# The first table's own width against the box that would scroll it and the article column.
HEADLINE_FITS = """
const t = arguments[0];
let box = t.parentElement;
while (box && box !== document.body && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
const scroller = (box && box !== document.body) ? box : t;
const column = (document.querySelector('article.bd-article') || document.querySelector('main')).getBoundingClientRect();
return {scroll: scroller.scrollWidth, client: scroller.clientWidth, right: t.getBoundingClientRect().right, column: column.right};
"""


def test_reader_checks_in_chromium(repo, built, browser, tmp_path):
    html = repo / "_build" / "html"
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    # The index is a redirect: the CLI screenshot needs virtual time to follow it.
    subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'cli'}",
            "--virtual-time-budget=5000",
            "--window-size=1280,1600",
            f"--screenshot={shots / 'index.png'}",
            (html / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert (shots / "index.png").is_file()

    browser.get((html / "index.html").as_uri())
    _wait_loaded(browser)
    assert browser.current_url.endswith("book/intro.html"), browser.current_url

    for page in book_pages(repo):
        browser.get(page.as_uri())
        _wait_loaded(browser)
        body = browser.find_element("tag name", "body").text
        assert "Smoke build" in body, f"no smoke banner on {page}"
        broken = browser.execute_script(
            "return [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not broken, (page, broken)
        # A report, read as one: tables rendered (no Markdown pipes), no code, nothing clipped.
        assert "|---" not in body and "| ---" not in body, f"raw Markdown table on {page}"
        assert "Show code cell" not in body and not browser.find_elements("css selector", ".cell_input"), page
        wide, cut_code = browser.execute_script(WIDE_TABLES)
        assert not wide, (page, wide)  # every table fits the column whole
        assert not cut_code, (page, cut_code)  # code blocks wrap
        assert not _console_errors(browser), (page, _console_errors(browser))
        assert not browser.find_elements("css selector", "#pst-header .search-button-field:not([hidden])") or (
            not browser.find_element("css selector", "#pst-header").is_displayed()
        ), page  # one search box: the sidebar's
        assert "download-pdf-button" not in browser.page_source, page  # the print dialog is not "the PDF"
        assert not browser.execute_script(BROKEN_TOKENS), (page, browser.execute_script(BROKEN_TOKENS))
        uncaptioned = browser.execute_script(UNCAPTIONED)
        assert not uncaptioned, (page, uncaptioned)  # every figure numbered ("Fig. N") and captioned

    results = html / "book" / "generated" / "results.html"
    browser.get(results.as_uri())
    _wait_loaded(browser)
    browser.save_screenshot(str(shots / "results.png"))
    body = browser.find_element("tag name", "body").text
    assert "Key findings" in body and "Reference (VPT-shallow)" in body and "Holm" in body
    assert "nan" not in body.lower().split()
    first_table = browser.find_elements("css selector", "table")[0]
    rows = first_table.find_elements("css selector", "tbody tr")
    assert len(rows) == len(METHODS), [r.text for r in rows]
    zero_shot = next(r.text for r in rows if r.text.startswith("Zero-shot CLIP"))
    assert "±" not in zero_shot  # one run: no spread shown, never a 0 or a nan
    # The headline table fits the column at 1280 px: nothing behind a sideways scroll, and
    # the earlier report's column is on screen.
    assert "earlier report (%)" in first_table.find_element("css selector", "thead").text
    fits = browser.execute_script(HEADLINE_FITS, first_table)
    assert fits["scroll"] <= fits["client"] + 1 and fits["right"] <= fits["column"] + 1, fits
    figures = browser.execute_script("return [...document.images].filter(i => i.naturalWidth > 0).length")
    assert figures >= 6  # accuracy with CIs, accuracy-vs-parameters, validation curves, losses, recall, reliability
    repro = html / "book" / "generated" / "reproducibility.html"
    browser.get(repro.as_uri())
    _wait_loaded(browser)
    links = browser.execute_script("return [...document.links].map(a => a.href).filter(h => h.endsWith('.ipynb'))")
    assert any(h.endswith("experiment.ipynb") for h in links), links  # the source notebooks, downloadable
    tables = browser.execute_script("return document.querySelectorAll('table').length")
    assert tables >= 2  # the runs and the environment, rendered
    browser.get((html / "book" / "generated" / "benchmark.html").as_uri())  # the appendix
    _wait_loaded(browser)
    assert browser.execute_script("return document.querySelectorAll('table').length") >= 1
    browser.get((html / "book" / "generated" / "experiments" / "vpt_deep.html").as_uri())
    _wait_loaded(browser)
    browser.save_screenshot(str(shots / "vpt_deep.png"))
    body = browser.find_element("tag name", "body").text
    assert "Settings chosen on validation" in body and body.count("\u2713 chosen") == 1  # the 2-point grid
    assert "val acc (%)" in body and "lr" in body
    for page, least in (("curves", 2), ("attention", 2), ("dataset", 3)):
        browser.get((html / "book" / "generated" / f"{page}.html").as_uri())
        _wait_loaded(browser)
        browser.save_screenshot(str(shots / f"{page}.png"))
        shown = browser.execute_script("return [...document.images].filter(i => i.naturalWidth > 0).length")
        assert shown >= least, page
    assert "aspect ratio" in browser.find_element("tag name", "body").text
    browser.get((html / "book" / "generated" / "results.html").as_uri())
    _wait_loaded(browser)
    assert "de-duplicated acc (%)" in browser.find_element("tag name", "body").text


def test_make_pdf_prints_the_book_with_the_banner_on_every_page(repo, built, browser):
    # `browser`: make pdf prints with the same Chromium (skipped with one line where it is
    # missing, never under CI).
    from pypdf import PdfReader

    res = make(repo, "pdf", "PROFILE=smoke", timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pdf = repo / "_build" / "pdf" / "book.pdf"
    pages = PdfReader(pdf).pages
    texts = [p.extract_text() for p in pages]
    assert len(pages) >= len(book_pages(repo)), len(pages)  # every chapter, at least a page each
    missing = [i + 1 for i, t in enumerate(texts) if "Smoke build" not in t]
    assert not missing, f"pages without the banner: {missing}"
    assert all(f"{i + 1} / {len(pages)}" in t for i, t in enumerate(texts))  # numbered
    whole = "\n".join(texts)
    for chapter in ("Results", "Methods", "Discussion", "Reproducibility"):
        assert chapter in whole, chapter
    assert sum(len(p.images) for p in pages) >= 6  # the figures came along
    # What make pdf printed, laid out as it printed it (print media, the page's content width):
    # no number or word in a table broken across lines ("0.2" / "02" for an ECE of 0.202).
    single = repo / "_build" / "singlehtml" / "index.html"
    try:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": PRINT_WIDTH, "height": 1100, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.get(single.as_uri())
        _wait_loaded(browser)
        broken = browser.execute_script(BROKEN_TOKENS.replace("article td, article th", "td, th"))
        assert not broken, broken
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_make_run_reexecutes_only_that_notebook(repo, built):
    before = {p.name: p.stat().st_mtime for p in (repo / "book" / "generated" / "experiments").glob("*.ipynb")}
    res = make(repo, "run", "PROFILE=smoke", "NB=vpt_shallow", "ARGS=-p epochs 2 -p prompt_tokens 3")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    again = make(repo, "book", "PROFILE=smoke")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    executed = re.findall(r"executing (\S+)", again.stdout)
    pages = ["attention.ipynb", "checklist.ipynb", "reproducibility.ipynb", "results.ipynb"]  # they read every method
    assert sorted(Path(e).name for e in executed) == pages, executed
    after = {p.name: p.stat().st_mtime for p in (repo / "book" / "generated" / "experiments").glob("*.ipynb")}
    assert [n for n in before if before[n] != after[n]] == ["vpt_shallow.ipynb"]
    page = (repo / "_build" / "html" / "book" / "generated" / "results.html").read_text()
    assert "prompt_tokens=3" in page and "epochs=2" in page  # the table shows that row's parameters
    looks = re.search(r"<th>VPT-shallow</th>\s*<td>(\d+)</td>\s*<td>(\d+)</td>", page)
    assert looks and looks.groups() == ("2", "4"), looks  # two settings seen on test, in four runs
    root = repo / "runs" / "smoke" / "vpt_shallow"
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    # Twice: a 2-point lr grid with the tuning seed, then seeds 0 and 1 afresh.
    assert len(runs) == 8  # the earlier run records are kept
    group = json.loads((root / "group.json").read_text())["runs"]
    assert set(group) <= {r.name for r in runs[4:]} and runs[-1].name in group
    assert all(r in page for r in group) and not any(r.name in page for r in runs[:4])


def test_make_sweep_reuses_the_books_points(repo, built):
    res = make(repo, "sweep", "PROFILE=smoke", "SWEEP=prompts", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "sweep prompts: 16 of 16 points finished" in res.stdout
    index = (repo / "runs" / "smoke" / "sweeps" / "prompts.csv").read_text()
    assert index.count("runs/smoke-prompts/vpt_") == 16


def test_another_model_re_executes_the_training_pages(repo, built):
    """A page carries what it was made from: the model and DRY_RUN are in the inputs stamp that
    preflight rewrites when they change, and the training pages depend on it (make -n shows
    what a build would execute, without running it)."""
    stamp = repo / "_build" / "inputs-smoke.json"
    inputs = json.loads(stamp.read_text())
    assert inputs["model"] == "models/tiny-clip" and inputs["dry_run"] is False
    times = stamp.stat()
    assert "book execute" not in make(repo, "-n", "notebooks", "PROFILE=smoke").stdout  # up to date
    try:
        stamp.write_text(json.dumps({**inputs, "model": "models/another-clip"}))  # as MODEL= would leave it
        plan = make(repo, "-n", "notebooks", "PROFILE=smoke").stdout
        executed = sorted(Path(p).name for p in re.findall(r"book execute notebooks/\S+ (\S+)", plan))
        assert "linear.ipynb" in executed and "curves.ipynb" in executed and "results.ipynb" in executed
        assert "dataset.ipynb" in executed  # its CLIP-embedding audit reads the model
        assert "attention.ipynb" in executed  # through the experiments
    finally:
        stamp.write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        os.utime(stamp, ns=(times.st_atime_ns, times.st_mtime_ns))


def _planned(repo: Path) -> set[str]:
    plan = make(repo, "-n", "book", "PROFILE=smoke")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    return set(re.findall(r"book/generated/(?:experiments/)?(\w+)\.ipynb --profile", plan.stdout))


def test_editing_a_report_module_re_executes_its_pages_keeps_the_overrides_and_retrains_nothing(repo, built):
    """A report module's edit re-executes the pages that use it (and those that read them),
    not the others; a re-executed page reuses every finished run and keeps make run's
    overrides (test_make_run_reexecutes_only_that_notebook set vpt_shallow's)."""
    runs_before = sorted(p.relative_to(repo).as_posix() for p in (repo / "runs").rglob("metrics.json"))
    ledger = repo / "runs" / "smoke" / "test-ledger.jsonl"
    looks_before = ledger.read_text()
    group = repo / "runs" / "smoke" / "vpt_shallow" / "group.json"
    group_before = group.read_text()
    assert _planned(repo) == set()
    with (repo / "vptlib" / "report" / "dataset.py").open("a") as f:
        f.write("\n\ndef _figure_colour() -> str:\n    return 'tab:red'\n")
    assert _planned(repo) == {"dataset"}  # the Dataset page alone uses it
    with (repo / "vptlib" / "report" / "experiment.py").open("a") as f:
        f.write("\n\ndef _figure_colour() -> str:\n    return 'tab:red'\n")
    pages = _planned(repo)
    assert set(METHODS) <= pages and not pages & {"curves", "variants", "benchmark"}, pages
    page = "book/generated/experiments/vpt_shallow.ipynb"
    res = make(repo, page, "PROFILE=smoke")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"executing {page}" in res.stdout and "prompt_tokens" in res.stdout  # with its overrides
    runs_after = sorted(p.relative_to(repo).as_posix() for p in (repo / "runs").rglob("metrics.json"))
    assert runs_after == runs_before, "a run was trained again"
    assert ledger.read_text() == looks_before  # nothing was evaluated on test again
    assert group.read_text() == group_before  # the page still shows make run's setting
    shown = (repo / page).read_text()
    assert "prompt_tokens = 3" in shown and "make reset NB=vpt_shallow" in shown  # and says it is an override
    assert make(repo, "-q", page, "PROFILE=smoke").returncode == 0  # and the page is up to date
    # make reset drops them: the next build re-executes that page with the profile's settings.
    res = make(repo, "reset", "PROFILE=smoke", "NB=vpt_shallow")
    assert res.returncode == 0 and "overrides dropped: vpt_shallow" in res.stdout, res.stdout + res.stderr
    assert make(repo, "-q", page, "PROFILE=smoke").returncode != 0  # that page is out of date again
    assert not (repo / "runs" / "smoke" / "overrides.yaml").exists()


def test_plain_papermill_never_changes_what_the_book_shows(repo, built, tmp_path):
    """A notebook executed outside the build names its runs in group-outside-book.json: the
    book's group.json, its pages and make's plan stay as they were."""
    group = repo / "runs" / "smoke" / "vpt_deep" / "group.json"
    before = group.read_text()
    planned = _planned(repo)
    res = subprocess.run(
        [
            str(repo / ".venv" / "bin" / "papermill"),
            "notebooks/experiment.ipynb",
            str(tmp_path / "out.ipynb"),
            *("-p", "profile_path", "profiles/smoke.yaml", "-p", "method", "vpt_deep"),
            *("-y", "{options: {epochs: 1}}"),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VPTLIB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert group.read_text() == before
    outside = json.loads((group.parent / "group-outside-book.json").read_text())
    assert outside["runs"] and not set(outside["runs"]) & set(json.loads(before)["runs"])
    assert _planned(repo) == planned  # nothing of the book changed behind make's back
    assert "outside the book's build" in (tmp_path / "out.ipynb").read_text()


def test_full_profile_offline_fails_fast(repo, tmp_path):
    t0 = time.monotonic()
    res = make(repo, "book", "PROFILE=full", timeout=300, env={"HF_HOME": str(tmp_path / "hf")})
    assert time.monotonic() - t0 < 90
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "Traceback" not in out
    from vptlib.models import hub

    fetch_model = hub.fetch_command(hub.DEFAULT_MODEL, hub.PINNED[hub.DEFAULT_MODEL])
    pubmed = "flaviagiammarino/pubmed-clip-vit-base-patch32"  # the profile's backbone: its own way forward
    fetch_backbone = hub.fetch_command(pubmed, "26c0c67f6da303ad2a38909130bd35744ea93517")
    backbone_way = f"make book BACKBONES=pubmedclip={hub.default_folder(pubmed)}"
    for needle in (fetch_model, "vptlib data fetch --archive", "make book DATA=", "make book PROFILE=smoke"):
        assert needle in out, needle
    for needle in ("backbone pubmedclip:", fetch_backbone, backbone_way, "backbone biomedclip:"):
        assert needle in out, needle
    biomed = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert f"BACKBONES=biomedclip={hub.default_folder(biomed)}" in out
    assert f"MODEL={hub.default_folder(biomed)}" not in out  # a backbone's route names BACKBONES=, never MODEL=
    assert not (repo / "runs" / "full").exists()  # stopped before any training
