"""What ``prepare`` is asked to do (:class:`PrepareOptions`, checked on construction) and one
image's row in the manifest (:class:`Row`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vptlib.errors import UserError
from vptlib.seeds import SEED_RANGE, is_seed

from .classes import STUDY_CLASSES, ClassMap
from .copies import Signature


@dataclass
class PrepareOptions:
    source: Path
    out: Path
    # Images per class; None (or "all" in a profile or on the command line): the pooled
    # draw (every usable image, split by copy cluster; the classes keep their imbalance).
    train_per_class: int | None = 120
    test_per_class: int | None = 80
    val_fraction: float = 0.2
    seed: int = 0
    classes: ClassMap = STUDY_CLASSES
    link: bool = False  # symlink instead of copying the chosen images
    # Free of copies by default: splits are drawn by copy cluster, one image per cluster in
    # validation and test. True restores the earlier behaviour: files drawn one by one,
    # copies kept and only reported.
    keep_duplicates: bool = False
    drop_test_duplicates: bool = False  # with keep_duplicates: exclude test images that copy a train/val one
    test_fraction: float = 0.2  # pooled draw: the share of each class's clusters that go to test

    def __post_init__(self):
        """Every value checked on construction, so a profile's ``prepare:`` is refused before any work."""
        self.train_per_class = per_class(self.train_per_class)
        self.test_per_class = per_class(self.test_per_class)
        for name in ("val_fraction", "test_fraction"):
            vf = getattr(self, name)
            if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a number in [0, 1), got {vf!r}")
        check_seed(self.seed)
        for name in ("link", "keep_duplicates", "drop_test_duplicates"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def pooled(self) -> bool:
        return self.test_per_class is None


def per_class(value: int | str | None) -> int | None:
    """An image count per class, or None for "all" (``all`` in profiles and on the command line)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"a per-class count must be a whole number or 'all', got {value!r}") from None
    if not 1 <= n <= MAX_PER_CLASS:
        raise UserError(f"--train-per-class and --test-per-class must be in [1, {MAX_PER_CLASS}] or 'all', got {n}")
    return n


MAX_PER_CLASS = 1_000_000


def check_seed(seed: int, flag: str = "--seed") -> None:
    if isinstance(seed, bool) or not is_seed(seed):
        raise UserError(f"{flag} must be an integer in {SEED_RANGE}, got {seed}")


@dataclass
class Row:
    path: str
    cls: str
    split: str
    source: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    note: str = ""
    dhash: int = 0
    phash: int = 0
    duplicate_of: str = ""
    duplicate_kind: str = ""
    excluded: str = ""
    folder: str = ""  # the source split it was read from: "train", "test" or "pool"
    signature: Signature | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, str]:
        chosen = self.split != "skipped"
        return {
            "path": self.path,
            "class": self.cls,
            "split": self.split,
            "sha256": self.sha256,
            "width": str(self.width) if chosen else "",
            "height": str(self.height) if chosen else "",
            "mode": self.mode,
            "source": self.source,
            "note": self.note,
            "dhash": f"{self.dhash:016x}" if chosen else "",
            "phash": f"{self.phash:016x}" if chosen else "",
            "duplicate_of": self.duplicate_of,
            "duplicate_kind": self.duplicate_kind,
            "excluded": self.excluded,
        }
