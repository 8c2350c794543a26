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


def method_flags() -> dict[str, tuple[str, type, str]]:
    """The methods' own options as flags (declared in each method's ``Options``)."""
    from vptlib.methods import command_line_options

    return command_line_options()


def method_options(a: argparse.Namespace) -> dict:
    """The method options given on the command line. Unset flags are None (a bool flag:
    False), so the method's own default applies; 0 is a value (``--prompt-tokens 0``)."""
    return {k: v for k in method_flags() if (v := getattr(a, k, None)) is not None and v is not False}


def _run(a: argparse.Namespace) -> None:
    from vptlib.runs.engine import RunConfig, run
    from vptlib.runs.parallel import is_main_process

    options = method_options(a)
    cfg = RunConfig(
        method=a.method,
        data=a.data,
        model=a.model,
        revision=a.revision,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        optimizer=a.optimizer,
        schedule=a.schedule,
        warmup=a.warmup,
        seed=a.seed,
        device=a.device,
        precision=a.precision,
        grad_clip=a.grad_clip,
        early_stopping=a.early_stopping,
        select=a.select,
        augment=not a.no_augment,
        test_curves=a.test_curves,
        train_per_class=a.train_per_class,
        epoch_steps=a.epoch_steps,
        compile=a.compile,
        profile=a.profile,
        out=a.out,
        options=options,
    )
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
    from vptlib.methods import METHODS
    from vptlib.models.hub import DEFAULT_MODEL
    from vptlib.runs.config import SELECTIONS

    methods = list(METHODS)
    r = sub.add_parser(
        "run",
        help="train and evaluate one method, writing a run record",
        description="Train one method on a prepared data folder. Unset hyper-parameters take "
        "the method's defaults; the epoch is selected on validation (--select last: the last epoch).",
    )
    r.add_argument("--method", required=True, help=f"one of: {', '.join(methods)}")
    r.add_argument("--data", required=True, help="a folder written by `vptlib data prepare`")
    r.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local folder (default {DEFAULT_MODEL})")
    r.add_argument(
        "--revision",
        default=None,
        help="a hub id's commit sha or branch (default: the pinned commit of vptlib.models.hub.PINNED, else main)",
    )
    r.add_argument("--epochs", type=int, default=None, help="training epochs (default: the method's)")
    r.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    r.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    r.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: the method's)")
    r.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="default: the method's")
    r.add_argument("--schedule", choices=["cosine", "constant"], default="cosine", help="lr schedule (default cosine)")
    r.add_argument("--warmup", type=int, default=0, help="linear warm-up epochs (default 0)")
    r.add_argument("--seed", type=seed_arg, default=0, help="seed for everything (default 0)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    r.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto | fp32 | bf16 | fp16 autocast (default auto: bf16 on GPUs of compute capability 8.0+ and "
        "on CPUs with AVX512-BF16/AMX, fp16 with loss scaling on older GPUs such as T4/V100, else fp32)",
    )
    clipped = ", ".join(f"{m} {s.defaults.grad_clip:g}" for m, s in METHODS.items() if s.defaults.grad_clip)
    r.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        help=f"max global gradient norm, 0 disables (default: the method's recipe: {clipped}; the others 0)",
    )
    r.add_argument("--early-stopping", type=int, default=0, help="patience in epochs, 0 disables (default 0)")
    r.add_argument(
        "--select",
        choices=list(SELECTIONS),
        default="val",
        help="val: keep the best epoch on validation and make every choice there (default); last: the "
        "validation-free protocol, the last epoch and each method's fixed values",
    )
    r.add_argument("--no-augment", action="store_true", help="train without augmentation")
    r.add_argument(
        "--test-curves",
        action="store_true",
        help="also evaluate test every epoch, for plots only (never used to select anything)",
    )
    r.add_argument("--train-per-class", type=int, default=None, help="few-shot: training images per class")
    r.add_argument(
        "--epoch-steps",
        default="pass",
        help="pass: an epoch is one pass over the training images; full-split: as many steps as one pass "
        "over the whole training split (few-shot runs keep the full run's step count)",
    )
    r.add_argument("--compile", action="store_true", help="torch.compile the model (opt-in)")
    for name, (flag, typ, text) in method_flags().items():
        if typ is bool:
            r.add_argument(flag, dest=name, action="store_true", help=text)
        else:
            r.add_argument(flag, dest=name, type=typ, default=None, help=text)
    r.add_argument("--profile", default="default", help="records go to OUT/PROFILE/METHOD/RUN-ID (default: default)")
    r.add_argument("--out", default="runs", help="records root (default runs)")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        from vptlib import switches

        switches.check()  # a bad environment switch stops every command before any work
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
