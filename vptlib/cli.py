"""The ``vptlib`` command line. Each sub-command is a thin shell over a library function.

A :class:`~vptlib.errors.UserError` becomes one line on stderr and exit code 2; the
user never sees a traceback for bad input or a missing resource.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UserError


def _data_prepare(a: argparse.Namespace) -> None:
    from .classes import parse_classes
    from .prepare import PrepareOptions, prepare

    res = prepare(PrepareOptions(Path(a.source), Path(a.out), a.train_per_class, a.test_per_class,
                                 a.val_fraction, a.seed, parse_classes(a.classes), a.link,
                                 a.drop_test_duplicates))  # fmt: skip
    print(res.table)
    dropped = f"; {res.excluded} test images excluded as duplicates of training images" if res.excluded else ""
    print(f"wrote {res.manifest} ({res.chosen} images, {res.skipped} files skipped{dropped})")


def _data_fetch(a: argparse.Namespace) -> None:
    from .fetch import fetch

    dest = fetch(a.dest)
    print(f"dataset in {dest}; next: vptlib data prepare --source {dest} --out data/brain-mri")


def _data_phantoms(a: argparse.Namespace) -> None:
    from .phantoms import write_phantoms

    if a.per_class < 1 or a.size < 64:
        raise UserError("--per-class must be >= 1 and --size >= 64")
    out = write_phantoms(a.out, a.per_class, a.size, a.seed)
    print(f"wrote {a.per_class} phantoms per class into {out}/Training and {out}/Testing")


def _model_tiny(a: argparse.Namespace) -> None:
    from .backbone import write_tiny_clip

    out = write_tiny_clip(a.out, seed=a.seed, layers=a.layers, width=a.width)
    print(f"wrote a tiny random CLIP ({a.layers} layers, width {a.width}) to {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vptlib", description="Prompt tuning for CLIP on brain MRI: data, models, runs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="fetch, prepare or synthesise data", description="Data sub-commands.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    pr = dsub.add_parser("prepare", help="sample the study subset and write manifest.csv",
                         description="Sample a stratified train/val/test subset from a class-folder tree.")  # fmt: skip
    pr.add_argument("--source", required=True, help="Training/ + Testing/ (Kaggle, SARTAJ) or flat class folders")
    pr.add_argument("--out", required=True, help="output folder (images/, manifest.csv, duplicates.csv)")
    pr.add_argument(
        "--train-per-class", type=int, default=120, help="training images per class, val included (default 120)"
    )
    pr.add_argument("--test-per-class", type=int, default=80, help="test images per class (default 80)")
    pr.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of training carved out for validation (default 0.2)"
    )
    pr.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    pr.add_argument("--classes", default=None,
                    help='your own classes: "name[=alias|alias],..." (default: the study\'s four)')  # fmt: skip
    pr.add_argument("--link", action="store_true", help="symlink the chosen images instead of copying")
    pr.add_argument("--drop-test-duplicates", action="store_true",
                    help="exclude test images that duplicate a training/validation image")  # fmt: skip
    pr.set_defaults(func=_data_prepare)

    fe = dsub.add_parser("fetch", help="download the Kaggle dataset (needs a network)",
                         description="Download the Kaggle Brain Tumor MRI Dataset with kagglehub.")  # fmt: skip
    fe.add_argument("--dest", default="data/kaggle-brain-mri", help="where to put it (default data/kaggle-brain-mri)")
    fe.set_defaults(func=_data_fetch)

    ph = dsub.add_parser("phantoms", help="generate synthetic MRI-like slices (offline)",
                         description="Write synthetic brain slices in the Kaggle layout.")  # fmt: skip
    ph.add_argument("--out", required=True, help="output folder")
    ph.add_argument("--per-class", type=int, required=True, help="images per class in each of Training/ and Testing/")
    ph.add_argument("--size", type=int, default=256, help="side length in pixels (default 256)")
    ph.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ph.set_defaults(func=_data_phantoms)

    model = sub.add_parser("model", help="model utilities", description="Model sub-commands.")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    ti = msub.add_parser("tiny", help="write a tiny random CLIP for offline use",
                         description="Write a tiny random CLIP with a local tokenizer and image processor.")  # fmt: skip
    ti.add_argument("--out", required=True, help="output folder")
    ti.add_argument("--seed", type=int, default=0, help="weight-init seed (default 0)")
    ti.add_argument("--layers", type=int, default=3, help="vision layers (default 3)")
    ti.add_argument("--width", type=int, default=64, help="hidden width (default 64)")
    ti.set_defaults(func=_model_tiny)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return p


# Sub-commands registered by other modules (run, ...): each adds its parser to ``sub``.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"vptlib: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vptlib: interrupted", file=sys.stderr)
        return 130
    return 0
