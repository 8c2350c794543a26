"""The reporting checklists, answered by the build: the NeurIPS paper checklist's experimental
items, REFORMS (Kapoor et al. 2024) and CLAIM 2024 (Tejani et al.).

Every answer is computed here from what the build recorded (the profile, the prepared data's
manifest and duplicates, each run's ``config.json``, ``support.csv`` and ``metrics.json``, the
test ledger, the lock file) and from the code's own constants; none is typed by hand. An item
the study does not meet says so (``status`` "no"), with why. ``where`` names the page that
shows the evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vptlib import REPO
from vptlib.data.fetch import KAGGLE_HANDLE
from vptlib.data.manifest import manifest_hash, read_manifest
from vptlib.runs import ledger, records
from vptlib.study.leakage import leaked_test_images
from vptlib.study.tuning import grid_points

from .comparison import POWER
from .loading import TITLES, latest_groups

# The data's licence, as its Kaggle page states it (the specification's fact sheet).
KAGGLE_LICENCE = "CC0 1.0 (public domain)"
YES, PARTLY, NO = "yes", "partly", "no"
# Where each page lies in the HTML book, seen from the generated pages (book/generated/): the
# table is a cell's output, whose links Sphinx does not resolve, so they name the files.
PAGES = {
    "dataset": "dataset.html",
    "results": "results.html",
    "reproducibility": "reproducibility.html",
    "methods": "../methods.html",
    "discussion": "../discussion.html",
}


@dataclass
class Evidence:
    """What one build recorded, gathered once for every item."""

    prof: Any  # vptlib.study.profile.Profile
    manifest: pd.DataFrame
    groups: dict[str, list[Path]]  # method -> the run folders of its reported seeds
    configs: dict[str, list[dict]] = field(default_factory=dict)
    metrics: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def gather(cls, prof: Any) -> Evidence:
        manifest = read_manifest(prof.data, include_excluded=True)
        groups = latest_groups(prof.runs, prof.profile)
        ev = cls(prof, manifest, groups)
        for method, dirs in groups.items():
            ev.configs[method] = [records.read_config(d) for d in dirs]
            ev.metrics[method] = [records.read_run(d).get("metrics", {}) for d in dirs]
        return ev

    @property
    def runs(self) -> int:
        return sum(len(d) for d in self.groups.values())

    def split_sizes(self) -> dict[str, int]:
        kept = self.manifest[self.manifest["excluded"] == ""]
        return {s: int((kept["split"] == s).sum()) for s in ("train", "val", "test")}


@dataclass(frozen=True)
class Item:
    standard: str
    ref: str  # the item's number or name in its standard
    question: str
    answer: Callable[[Evidence], tuple[str, str]]  # -> (status, what the build did)
    where: str  # the page that shows it


def _data_source(ev: Evidence) -> tuple[str, str]:
    src = ev.prof.source
    if "kaggle" in src:
        return YES, (
            f"Kaggle {KAGGLE_HANDLE} (licence {KAGGLE_LICENCE}); the prepared folder's manifest "
            f"lists every file with its sha256 (manifest hash {manifest_hash(ev.prof.data)})"
        )
    return NO, (
        f"synthetic phantoms (this is the {ev.prof.profile} build: nothing here is real data); the full "
        f"profile reads Kaggle {KAGGLE_HANDLE} (licence {KAGGLE_LICENCE})"
    )


def _splits(ev: Evidence) -> tuple[str, str]:
    n = ev.split_sizes()
    rule = ev.prof.source.get("prepare", {})
    return YES, (
        f"{n['train']} training, {n['val']} validation and {n['test']} test images, drawn per class with seed "
        f"{rule.get('seed', 0)} (validation fraction {rule.get('val_fraction', '–')}); copies of one image "
        f"(exact or near, the copy rule of vptlib.data.copies) stay in one split; manifest hash "
        f"{manifest_hash(ev.prof.data)}"
    )


def _support_sets(ev: Evidence) -> tuple[str, str]:
    with_file = [c for cs in ev.configs.values() for c in cs if c.get("support_set")]
    if not ev.runs:
        return NO, "no run has finished yet"
    digests = sorted({c["support_set"]["sha256"][:12] for c in with_file})
    status = YES if len(with_file) == ev.runs else PARTLY
    return status, (
        f"{len(with_file)} of the main study's {ev.runs} reported runs record the exact training and validation files they used, "
        f"with each file's sha256 ({records.SUPPORT}; {len(digests)} distinct support sets, "
        f"e.g. {', '.join(digests[:3])})"
    )


def _seeds(ev: Evidence) -> tuple[str, str]:
    seeded = {m: len(d) for m, d in ev.groups.items() if len(d) > 1}
    once = [TITLES[m] for m, d in ev.groups.items() if len(d) == 1]
    return YES, (
        f"seeds {ev.prof.seeds}: {len(seeded)} methods ran once per seed; "
        f"{', '.join(once) or 'none'} depend on no seed and ran once; grids ran with seed {ev.prof.grid_seed}, "
        f"never reported"
    )


def _grids(ev: Evidence) -> tuple[str, str]:
    sized = {m: len(grid_points(ev.prof, m)) for m in ev.prof.hparams}
    tuned = {m: n for m, n in sized.items() if n > 1}
    return YES, (
        f"{len(tuned)} methods tuned on validation ({', '.join(f'{TITLES[m]} {n}' for m, n in tuned.items())} "
        f"grid points); the others run their papers' fixed settings; every choice is made on validation, "
        f"ties to the lower validation loss (vptlib.selection)"
    )


def _test_looks(ev: Evidence) -> tuple[str, str]:
    looks = ledger.read_ledger(records.profile_folder(ev.prof.runs, ev.prof.profile))
    reported = [e for e in looks if e["what"] == "reported"]
    settings = {(e["method"], e["settings"]) for e in reported}
    return YES, (
        f"the test ledger counts {len(reported)} reported test evaluations of {len(settings)} settings; "
        f"{len(looks) - len(reported)} more were drawn for plots and chose nothing"
    )


def _leakage(ev: Evidence) -> tuple[str, str]:
    leaked = leaked_test_images(ev.prof.data)
    n = ev.split_sizes()["test"]
    status = YES if not leaked else PARTLY
    return status, (
        f"{len(leaked)} of {n} test images have a listed copy in training or validation "
        f"(duplicates.csv); the Dataset page shows each test image's nearest training image"
    )


def _statistics(ev: Evidence) -> tuple[str, str]:
    return YES, (
        "95% intervals on every accuracy; each method against the reference fixed before any result "
        f"({TITLES[ev.prof.reference]}): paired per-image differences with the seeds' spread, Welch-"
        f"Satterthwaite t, Holm-corrected p-values, and the difference detectable at {POWER:.0%} power"
    )


def _compute(ev: Evidence) -> tuple[str, str]:
    seconds = [m.get("seconds", {}).get("total", 0.0) for ms in ev.metrics.values() for m in ms]
    devices = sorted({c["device"] for cs in ev.configs.values() for c in cs})
    if not seconds:
        return NO, "no run has finished yet"
    return YES, (
        f"the main study's {len(seconds)} reported runs took {sum(seconds) / 3600:.2f} h in all (the longest "
        f"{max(seconds) / 60:.1f} min) on {'; '.join(devices)}; each run's record splits its time into "
        f"training, evaluation and overhead"
    )


def _software(ev: Evidence) -> tuple[str, str]:
    lock = REPO / "requirements.txt"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.is_file() else "missing"
    commits = sorted({c.get("git_commit") or "unknown" for cs in ev.configs.values() for c in cs})
    pinned = sum(1 for line in lock.read_text().splitlines() if "==" in line) if lock.is_file() else 0
    return YES, (
        f"requirements.txt pins {pinned} packages (sha256 {digest}); runs made at git commit(s) "
        f"{', '.join(c[:12] for c in commits) or 'none'}; each run records its package versions and code hash"
    )


def _model(ev: Evidence) -> tuple[str, str]:
    rev = ev.prof.revision or "a local folder"
    return YES, (
        f"{ev.prof.model} at {rev}; each run records the weights' sha256 and its code hash; every method's "
        "recipe and where it departs from its paper's code are on the Methods page"
    )


def _reference_standard(ev: Evidence) -> tuple[str, str]:
    return NO, (
        "the labels are the data set's folder names; no radiologist read them again, and the data "
        "carry no pathology report, so the ground truth is as good as the collection it came from"
    )


def _patients(ev: Evidence) -> tuple[str, str]:
    return NO, (
        "the data carry no patient identifiers, so splits cannot be made per patient; copies of one "
        "image are kept in one split, which removes repeated images but not repeated patients"
    )


def _external(ev: Evidence) -> tuple[str, str]:
    return NO, "one data set, one test split drawn from it; no external or multi-site test set"


def _failure(ev: Evidence) -> tuple[str, str]:
    return YES, (
        "per-class precision, recall and confusion matrices, calibration (ECE), conformal prediction sets, "
        "the test set with its leaked copies removed, and the attention maps of misclassified images"
    )


NEURIPS = "NeurIPS checklist"
REFORMS = "REFORMS"
CLAIM = "CLAIM 2024"

ITEMS: tuple[Item, ...] = (
    Item(NEURIPS, "4", "Can the results be reproduced?", _support_sets, "reproducibility"),
    Item(NEURIPS, "5", "Open access to data and code?", _data_source, "dataset"),
    Item(NEURIPS, "6", "Training and test details (splits, hyper-parameters, how chosen)?", _grids, "methods"),
    Item(NEURIPS, "7", "Statistical significance reported?", _statistics, "results"),
    Item(NEURIPS, "8", "Compute resources stated?", _compute, "reproducibility"),
    Item(REFORMS, "2 computational reproducibility", "Code, environment and seeds?", _software, "reproducibility"),
    Item(REFORMS, "3 data quality", "Source, licence and version of the data?", _data_source, "dataset"),
    Item(REFORMS, "5 modelling", "Every model and how its settings were chosen?", _model, "methods"),
    Item(REFORMS, "6 data leakage", "Is the test set independent of training?", _leakage, "dataset"),
    Item(REFORMS, "6 data leakage", "Was the test set used for any choice?", _test_looks, "results"),
    Item(REFORMS, "7 metrics and uncertainty", "Uncertainty over seeds and test images?", _seeds, "results"),
    Item(REFORMS, "8 generalisability", "Beyond this data set?", _external, "discussion"),
    Item(CLAIM, "7 data sources", "Where the data come from?", _data_source, "dataset"),
    Item(CLAIM, "14 reference standard", "How the ground truth was established?", _reference_standard, "dataset"),
    Item(CLAIM, "21 data partitions", "How the data were split?", _splits, "dataset"),
    Item(CLAIM, "21 data partitions", "Split at the patient level?", _patients, "dataset"),
    Item(CLAIM, "26 training details", "Training approach and hyper-parameters?", _grids, "methods"),
    Item(CLAIM, "29 statistical measures", "Statistical measures of significance?", _statistics, "results"),
    Item(CLAIM, "32 external testing", "External test data?", _external, "discussion"),
    Item(CLAIM, "33 failure analysis", "Analysis of failures?", _failure, "results"),
)


def checklist(prof: Any) -> pd.DataFrame:
    """Every item answered from this build: standard, item, question, status, answer, where."""
    ev = Evidence.gather(prof)
    rows = []
    for item in ITEMS:
        status, text = item.answer(ev)
        rows.append(
            {
                "standard": item.standard,
                "item": item.ref,
                "question": item.question,
                "met": status,
                "what the build did": text,
                "where": item.where,
            }
        )
    return pd.DataFrame(rows)


def checklist_markdown(prof: Any) -> str:
    """The checklist as one Markdown table per standard, each ``where`` a link to its page."""
    table = checklist(prof)
    out = []
    for standard, rows in table.groupby("standard", sort=False):
        out += [f"### {standard}", "", "| item | question | met | what the build did |", "|---|---|---|---|"]
        for r in rows.itertuples(index=False):
            answer = f"{r[4]} ([{r.where}]({PAGES[r.where]}))"
            out.append(f"| {r.item} | {r.question} | {r.met} | {answer} |")
        out.append("")
    return "\n".join(out)
