"""The command line: ``vptlib`` (:mod:`.app`) and its data and model subcommands (:mod:`.data`)."""

from .app import build_parser, main, method_options

__all__ = ["build_parser", "main", "method_options"]
