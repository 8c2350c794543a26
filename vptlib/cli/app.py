"""The ``vptlib`` command line. Each sub-command is a thin shell over a library function.

A :class:`~vptlib.errors.UserError` becomes one line on stderr and exit code 2; the
user never sees a traceback for bad input or a missing resource.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vptlib.errors import UserError

from .book import add_book_parser, add_sweep_parser
from .data import add_data_parser, add_model_parser, seed_arg


def method_options(a: argparse.Namespace) -> dict:
    """The method options given on the command line. Unset flags are None, so the method's own
    default applies; 0 and False are values (``--prompt-tokens 0``, ``--no-lp-ft``)."""
    from vptlib.methods import command_line_options

    return {k: v for k in command_line_options() if (v := getattr(a, k, None)) is not None}


def _run(a: argparse.Namespace) -> None:
    from vptlib.models.hub import missing_folder  # light: checked before torch is imported

    if missing_folder(a.model):
        raise UserError(missing_folder(a.model))
    if a.profile.endswith((".yaml", ".yml")):  # --profile means the profile everywhere: given its file, use its name
        from vptlib.study.profile import load

        a.profile = load(a.profile, check_methods=False).profile
    from vptlib.runs.config import command_line_fields
    from vptlib.runs.engine import RunConfig, run
    from vptlib.runs.parallel import is_main_process

    given = {f.name: getattr(a, f.name) for f, _ in command_line_fields()}
    cfg = RunConfig(**given, options=method_options(a))
    res = run(cfg, resume=a.resume, progress=not a.quiet)
    if not is_main_process():  # one summary line per data-parallel run
        return
    test = res.metrics["test"] or {}
    lo, hi = test.get("accuracy_ci95", [float("nan")] * 2)
    print(
        f"{a.method}: test accuracy {test.get('accuracy', float('nan')):.4f} (95% CI {lo:.4f}-{hi:.4f}), "
        f"selected epoch {res.metrics['best_epoch']} by validation; record in {res.run_dir}"
    )


def _predict(a: argparse.Namespace) -> None:
    from vptlib import atomic
    from vptlib.runs.predict import describe, predict

    table = predict(a.run_dir, a.inputs, device=a.device, progress=not a.quiet, model=a.model)
    print(describe(table))
    bad = table[table.error != ""]
    if a.out:
        atomic.write_bytes(a.out, table.to_csv(index=False).encode())
        print(f"wrote {a.out}")
    for path, why in zip(bad.path, bad.error, strict=True):
        print(f"vptlib: not classified: {path}: {why}", file=sys.stderr)
    if len(bad) == len(table):
        raise UserError(f"none of the {len(table)} inputs could be classified (reasons above)")


def _add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images with a finished run",
        description="Classify image files or folders (searched recursively) with a finished run, "
        "decoded as `data prepare` does and computed as the run computed (its "
        "preprocessing, precision and class names). Unreadable files are listed "
        "with a reason.",
    )
    p.add_argument("run_dir", help="runs/<profile>/<method>/<run-id>")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    p.add_argument("--out", default=None, help="also write the table as CSV (path, pred, prob_<class>..., error)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps (default cpu)")
    p.add_argument(
        "--model", default=None, help="where the run's base model is now, if it moved (it must hold the same weights)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)


def _add_run_parser(sub) -> None:
    # The flags come from run_flags.json (made from RunConfig and the method registry), so that
    # `vptlib run --help` and a mistyped --method answer without importing torch.
    from vptlib.errors import did_you_mean

    from .run_flags import load

    spec = load()
    methods = spec["methods"]

    def method_name(value: str) -> str:
        if value not in methods:
            raise argparse.ArgumentTypeError(
                f"unknown method {value!r}{did_you_mean(value, methods)}; choose one of: {', '.join(methods)}"
            )
        return value

    kinds = {"int": int, "float": float, "str": str, "seed": seed_arg}
    r = sub.add_parser(
        "run",
        help="train and evaluate one method, writing a run record",
        description="Train one method on a prepared data folder. Unset hyper-parameters take "
        "the method's defaults; the epoch is selected on validation (--select last: the last epoch).",
    )
    for f in spec["flags"]:  # one flag per RunConfig field, then the methods' own options
        if f["type"] == "bool":  # --x and --no-x: an option that defaults to True can still be turned off
            r.add_argument(
                f["flag"], dest=f["dest"], action=argparse.BooleanOptionalAction, default=f["default"], help=f["help"]
            )
            continue
        kind = method_name if f["dest"] == "method" else kinds[f["type"]]
        r.add_argument(
            f["flag"],
            dest=f["dest"],
            type=kind,
            default=f["default"],
            required=f["required"],
            choices=f["choices"],
            help=f["help"],
        )
    r.add_argument("--resume", action="store_true", help="continue the newest unfinished run with the same settings")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_run)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) like every other error."""

    def error(self, message: str):
        self.exit(2, f"vptlib: error: {self.prog.removeprefix('vptlib ')}: {message} (see --help)\n")


# Every command, with the one line ``vptlib --help`` shows for it. Building a command's own
# parser may import the method registry (torch, transformers: seconds), so a parser is built
# only for the command given; the others are listed by these lines
# (tests/cli/test_cli.py checks that they equal each command's own help).
COMMANDS = {
    "data": (add_data_parser, "fetch, prepare or synthesise data"),
    "model": (add_model_parser, "model utilities"),
    "run": (_add_run_parser, "train and evaluate one method, writing a run record"),
    "predict": (_add_predict_parser, "classify images with a finished run"),
    "sweep": (add_sweep_parser, "run a profile's named grid of runs (make sweep)"),
    "book": (add_book_parser, "build steps used by make book / make run"),
}
ALL = "*"  # build_parser(ALL): every command's full parser


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The ``vptlib`` parser with ``command``'s sub-parser in full (``ALL``: every one; None or
    an unknown name: none, each command listed by its help line only)."""
    p = _Parser(prog="vptlib", description="Prompt tuning for CLIP on brain MRI: data, models, runs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add, summary) in COMMANDS.items():
        if command in (ALL, name):
            add(sub)
        else:
            sub.add_parser(name, help=summary)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv_given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command).parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already printed as one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        from vptlib import switches

        switches.check()  # a bad environment switch stops every command before any work
        if argv_given is None:  # this process's own command: size its threads (and its kernels')
            from vptlib import threads

            threads.set_defaults()
        args.func(args)
    except UserError as exc:
        print(f"vptlib: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a read-only or full disk, a missing permission, a path that is a file
        where = f": {exc.filename}" if exc.filename else ""
        print(f"vptlib: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print("vptlib: error: out of memory; lower --batch-size or the image/prompt sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vptlib: interrupted", file=sys.stderr)
        return 130
    return 0
