"""vptlib: a reproducible study of prompt tuning for CLIP on brain MRI."""

from pathlib import Path

__version__ = "0.1.0"

PACKAGE = Path(__file__).resolve().parent  # the vptlib folder
REPO = PACKAGE.parent  # the source checkout it is imported from: profiles/, notebooks/, benchmarks/
GUIDE = REPO / "docs" / "guide.md"  # the user guide; the README is the short introduction
