"""The ``vptlib data`` and ``vptlib model`` sub-commands: preparing data, synthetic phantoms,
the tiny offline model and checkpoint conversion."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vptlib.errors import UserError
from vptlib.seeds import SEED_RANGE, is_seed


def seed_arg(text: str) -> int:
    """An integer seed in :data:`~vptlib.seeds.SEED_RANGE`; anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: an integer in {SEED_RANGE}") from None
    if not is_seed(value):
        raise argparse.ArgumentTypeError(f"seed {value} is out of range {SEED_RANGE}")
    return value


def count_arg(text: str) -> int:
    """A whole number of at least 1 (workers, processes)."""
    from vptlib.switches import whole_number

    value = whole_number(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _per_class(value: str) -> int | None:
    from vptlib.data.draw import per_class

    try:
        return per_class(value)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# prepare's drawing settings, as flags and as a profile's ``source: prepare:`` keys.
PREPARE_DEFAULTS = {"train_per_class": 120, "test_per_class": 80, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}


def _data_prepare(a: argparse.Namespace) -> None:
    from vptlib.data.classes import parse_classes
    from vptlib.data.prepare import PrepareOptions, prepare

    settings = dict(PREPARE_DEFAULTS)
    if a.profile:
        from vptlib.study import profile

        prof = profile.load(a.profile, check_methods=False)  # a name in profiles/ or a file
        settings |= (prof.source or {}).get("prepare", {})
    given = {k: getattr(a, k) for k in PREPARE_DEFAULTS if getattr(a, k) is not None}
    if a.profile and given:
        raise UserError(
            f"--profile {a.profile} sets how the splits are drawn; drop --{next(iter(given)).replace('_', '-')}"
        )
    settings |= given
    res = prepare(
        PrepareOptions(
            Path(a.source),
            Path(a.out),
            classes=parse_classes(a.classes),
            link=a.link,
            keep_duplicates=a.keep_duplicates,
            drop_test_duplicates=a.drop_test_duplicates,
            **settings,
        ),
        progress=sys.stderr.isatty(),  # a bar for a person; a log or a test reads one line
    )
    print(res.table)
    dropped = f"; {res.excluded} test images excluded as copies of training images" if res.excluded else ""
    print(f"wrote {res.manifest} ({res.chosen} images, {res.skipped} files skipped{dropped}); {res.timing()}")


def _data_audit(a: argparse.Namespace) -> None:
    from vptlib.data.classes import parse_classes
    from vptlib.study import audit

    report = audit.audit(a.source, parse_classes(a.classes), progress=sys.stderr.isatty())
    out = audit.write(report, a.out or Path("audits") / Path(a.source).resolve().name)
    print(audit.table(report))
    print(f"wrote {out}/audit.json, pairs.csv, shifted.csv, closest.png")


def _data_fetch(a: argparse.Namespace) -> None:
    from vptlib.data.fetch import fetch

    dest = fetch(a.dest, handle=a.handle, archive=a.archive)
    print(f"dataset in {dest}; next: vptlib data prepare --source {dest} --out data/brain-mri")


def _data_phantoms(a: argparse.Namespace) -> None:
    from vptlib.data.phantoms import write_phantoms

    out = write_phantoms(a.out, a.per_class, a.size, a.seed)
    print(f"wrote {a.per_class} phantoms per class into {out}/Training and {out}/Testing")


def _model_tiny(a: argparse.Namespace) -> None:
    from vptlib.models.offline import write_tiny_clip
    from vptlib.study.pretrain import pretrain_tiny

    if a.pretrain_epochs < 0:
        raise UserError("--pretrain-epochs must be >= 0")
    if a.pretrain_epochs:
        out = pretrain_tiny(a.out, epochs=a.pretrain_epochs, seed=a.seed)
        print(f"wrote a tiny CLIP pretrained for {a.pretrain_epochs} epochs on phantoms to {out}")
    else:
        out = write_tiny_clip(a.out, seed=a.seed, layers=a.layers, width=a.width)
        print(f"wrote a tiny random CLIP ({a.layers} layers, width {a.width}) to {out}")


def _model_fetch(a: argparse.Namespace) -> None:
    from vptlib.models import hub, snapshot

    out = snapshot.fetch(a.model, a.revision, a.out)
    commit = json.loads((out / hub.SOURCE_FILE).read_text())["commit"]
    print(
        f"wrote {out} ({a.model} at {commit}); copy it to the machine "
        f"that runs the study and pass --model {out} (make book MODEL={out})"
    )


def _model_convert(a: argparse.Namespace) -> None:
    from vptlib.models.backbone import convert_to_safetensors

    out = convert_to_safetensors(a.src, a.out)
    print(f"wrote {out}/model.safetensors; use --model {out}")


# Method options exposed as flags; only those given are passed, so the method's own
# defaults apply otherwise and an option that does not fit the method is an error.


def add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="fetch, prepare or synthesise data", description="Data sub-commands.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    pr = dsub.add_parser(
        "prepare",
        help="sample the study subset and write manifest.csv",
        description="Sample a stratified train/val/test subset from a class-folder tree. Files "
        "that cannot be used are listed in manifest.csv with the reason: unreadable, "
        "over 40 megapixels, a side under 16 pixels, or more elongated than 8:1. "
        "--out must be new, empty, or written by an earlier prepare; it is replaced "
        "as one unit, and never overlaps --source.",
    )
    pr.add_argument("--source", required=True, help="Training/ + Testing/ (Kaggle, SARTAJ) or flat class folders")
    pr.add_argument("--out", required=True, help="output folder (images/, manifest.csv, duplicates.csv)")
    pr.add_argument(
        "--profile",
        default=None,
        help="draw exactly as this profile's book does (its source: prepare: settings): a name in profiles/ or a path",
    )
    pr.add_argument(
        "--train-per-class",
        type=_per_class,
        default=None,
        help="training images per class, val included, or 'all': the pooled split by copy cluster (default 120)",
    )
    pr.add_argument(
        "--test-per-class", type=_per_class, default=None, help="test images per class, or 'all' (default 80)"
    )
    pr.add_argument(
        "--val-fraction", type=float, default=None, help="share of training carved out for validation (default 0.2)"
    )
    pr.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="with --test-per-class all: share of each class's copy clusters in test (default 0.2)",
    )
    pr.add_argument("--seed", type=seed_arg, default=None, help="sampling seed (default 0)")
    pr.add_argument(
        "--classes", default=None, help='your own classes: "name[=alias|alias],..." (default: the study\'s four)'
    )
    pr.add_argument("--link", action="store_true", help="symlink the chosen images instead of copying")
    pr.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep exact and near duplicates across and within splits (only report them); by default "
        "a duplicate of an image already chosen is skipped and replaced, so no validation or test "
        "image has a copy in training",
    )
    pr.add_argument(
        "--drop-test-duplicates",
        action="store_true",
        help="with --keep-duplicates: exclude test images that duplicate a training/validation image",
    )
    pr.set_defaults(func=_data_prepare)

    from vptlib.data.fetch import KAGGLE_HANDLE

    au = dsub.add_parser(
        "audit",
        help="the leakage report of a source: copies within and across its folders, per class; the floors",
        description="Compare every image of SOURCE with every other by the copy rule prepare splits by "
        "(vptlib.data.copies) and report copies by kind, class and folder pair, the Testing images with a "
        "copy in Training, the copy clusters and the floors. Writes audit.json, pairs.csv, shifted.csv and "
        "closest.png.",
    )
    au.add_argument("source", help="Training/ + Testing/ (Kaggle, SARTAJ) or flat class folders")
    au.add_argument("--out", default=None, help="output folder (default audits/<source folder name>)")
    au.add_argument("--classes", default=None, help="class names or aliases, as for prepare")
    au.set_defaults(func=_data_audit)

    fe = dsub.add_parser(
        "fetch",
        help="download the Kaggle dataset (needs a network), or unpack its zip",
        description="Download the Kaggle Brain Tumor MRI Dataset at a pinned version with "
        "kagglehub (no credentials needed for this public dataset; HTTPS_PROXY is "
        "honoured), or unpack a zip downloaded by hand. DEST/source.json records "
        "the version, the file counts and a sha256 of the file list.",
    )
    fe.add_argument("--dest", default="data/kaggle-brain-mri", help="where to put it (default data/kaggle-brain-mri)")
    fe.add_argument(
        "--handle", default=KAGGLE_HANDLE, help=f"kagglehub handle with its version (default {KAGGLE_HANDLE})"
    )
    fe.add_argument("--archive", default=None, help="a zip of the dataset downloaded by hand: unpacked, not downloaded")
    fe.set_defaults(func=_data_fetch)

    ph = dsub.add_parser(
        "phantoms",
        help="generate synthetic MRI-like slices (offline)",
        description="Write synthetic brain slices in the Kaggle layout.",
    )
    ph.add_argument("--out", required=True, help="output folder")
    ph.add_argument("--per-class", type=int, required=True, help="images per class in each of Training/ and Testing/")
    ph.add_argument("--size", type=int, default=256, help="side length in pixels, 64 to 4096 (default 256)")
    ph.add_argument("--seed", type=seed_arg, default=0, help="generator seed (default 0)")
    ph.set_defaults(func=_data_phantoms)


def add_model_parser(sub) -> None:
    model = sub.add_parser("model", help="model utilities", description="Model sub-commands.")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    ti = msub.add_parser(
        "tiny",
        help="write a tiny random CLIP for offline use",
        description="Write a tiny random CLIP with a local tokenizer and image processor.",
    )
    ti.add_argument("--out", required=True, help="output folder")
    ti.add_argument("--seed", type=seed_arg, default=0, help="weight-init seed (default 0)")
    ti.add_argument("--layers", type=int, default=3, help="vision layers (default 3)")
    ti.add_argument("--width", type=int, default=64, help="hidden width (default 64)")
    ti.add_argument(
        "--pretrain-epochs",
        type=int,
        default=0,
        help="warm the vision tower up on separate phantoms, supervised (default 0: random)",
    )
    ti.set_defaults(func=_model_tiny)
    from vptlib.models.hub import DEFAULT_MODEL, PINNED

    fe = msub.add_parser(
        "fetch",
        help="download a hub CLIP into a plain folder (for air-gapped machines)",
        description="Download the files the study needs of a hub model at a pinned revision "
        "(config, tokenizer, processor, one weights file) into a folder to copy to "
        "a machine without a network; source.json records the repo, the commit "
        "and each file's sha256. Honours HF_ENDPOINT, HF_TOKEN and HTTPS_PROXY.",
    )
    fe.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id (default {DEFAULT_MODEL})")
    fe.add_argument(
        "--revision",
        default=None,
        help=f"commit sha or branch (default: the pinned one, {PINNED[DEFAULT_MODEL][:12]}... for {DEFAULT_MODEL})",
    )
    fe.add_argument("--out", required=True, help="output folder, e.g. models/clip-vit-base-patch32")
    fe.set_defaults(func=_model_fetch)
    cv = msub.add_parser(
        "convert",
        help="rewrite a local CLIP checkpoint's .bin weights as safetensors",
        description="Some hub CLIP checkpoints (e.g. flaviagiammarino/pubmed-clip-vit-base-patch32) "
        "ship only pickled pytorch_model.bin; this reads them with "
        "torch.load(weights_only=True) and writes model.safetensors.",
    )
    cv.add_argument("--src", required=True, help="folder with config.json and pytorch_model*.bin")
    cv.add_argument("--out", required=True, help="output folder for --model")
    cv.set_defaults(func=_model_convert)
