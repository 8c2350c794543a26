"""``python -m vptlib.methods``: the registry's method names as a Makefile line, so the build
asks the registry instead of keeping a second list."""

from . import METHODS

print("METHODS := " + " ".join(METHODS))
