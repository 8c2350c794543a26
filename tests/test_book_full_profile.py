"""`make book PROFILE=full DRY_RUN=1` on the tiny model: every page of the full profile, every
run cut short. A file of its own, so it runs beside the smoke book's tests (make test: two
workers), in its own copy of the working tree."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from book_repo import book_pages, copy_repo, make

from vptlib.methods import METHODS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("full-dry-run") / "repo")


def test_dry_run_of_the_full_profile_on_the_tiny_model(repo, tmp_path):
    """`make book PROFILE=full DATA=... MODEL=... DRY_RUN=1`: every page of the full profile, every run cut short.

    The tiny model and phantoms in the Kaggle layout stand in for ViT-B/32 and the real data;
    the full profile's own split sizes, grids and sweeps are used.
    """
    from stand_ins import write_tiny_biomedclip

    from vptlib.data.phantoms import write_phantoms

    kaggle = write_phantoms(tmp_path / "kaggle", per_class=200, size=64, seed=1)  # 120 train + 80 test per class
    biomed = write_tiny_biomedclip(tmp_path / "tiny-biomedclip")  # open_clip's layout, random weights
    t0 = time.monotonic()
    res = make(
        repo,
        "book",
        "PROFILE=full",
        "DRY_RUN=1",
        f"DATA={kaggle}",
        "MODEL=models/tiny-clip",
        # local folders for the profile's PubMedCLIP, LAION ViT-B/32 and BiomedCLIP
        f"BACKBONES=pubmedclip=models/tiny-clip-b,laion=models/tiny-clip-b,biomedclip={biomed}",
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    print(f"dry run of the full profile built in {time.monotonic() - t0:.0f} s")
    assert not (repo / "runs" / "full").exists()  # a rehearsal never mixes with the real runs
    root = repo / "runs" / "full-dry-run"
    for m, spec in METHODS.items():
        group = json.loads((root / m / "group.json").read_text())
        assert group["seeds"] == [0], m
        metrics = json.loads((root / m / group["runs"][0] / "metrics.json").read_text())
        assert metrics["epochs_run"] == (1 if spec.trains and m != "linear" else 0), m
        assert metrics["test"]["n"] == 320  # the full profile's own test split
    for variant, method in (("backbone-pubmedclip", "vpt_deep"), ("protocol-fixed", "vpt_deep")):
        folder = repo / "runs" / f"full-dry-run-{variant}" / method
        cfg = json.loads(
            (folder / json.loads((folder / "group.json").read_text())["runs"][0] / "config.json").read_text()
        )
        assert cfg["epochs"] == 1 and cfg["select"] == ("last" if variant.startswith("protocol") else "val"), variant
        assert cfg["model"].endswith("tiny-clip-b") == variant.startswith("backbone"), variant
    html = repo / "_build" / "html"
    shown = [p for p in book_pages(repo) if 'http-equiv="Refresh"' not in p.read_text()]  # index.html redirects
    assert len(shown) >= len(METHODS) + 7
    for page in shown:
        assert "Dry run" in page.read_text(), page.relative_to(html)
