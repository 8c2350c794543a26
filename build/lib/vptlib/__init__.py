"""vptlib: a reproducible study of prompt tuning for CLIP on brain MRI."""

__version__ = "0.1.0"
