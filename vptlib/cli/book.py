"""``vptlib book`` (the steps behind ``make book`` and ``make run``) and ``vptlib sweep``."""

from __future__ import annotations

import argparse
from pathlib import Path

from vptlib.errors import UserError
from vptlib.study.launch import CLUSTERS, LAUNCHERS

from .data import count_arg


def _book(a: argparse.Namespace) -> None:
    from vptlib.study import book, notebooks, overrides, rerun

    if a.book_command == "preflight":
        prof = book.preflight(a.profile, a.data, a.model, a.stamp)
        if a.overrides:
            from vptlib.methods import METHODS

            overrides.write_stamps(overrides.path(prof.runs, prof.profile), a.overrides, list(METHODS))
        print(f"preflight ok: {a.profile}")
    elif a.book_command == "data":
        book.prepare_data(a.profile, a.data)
    elif a.book_command == "execute":
        # Torch-free: each page's executor is a process of its own, and the kernel imports
        # torch anyway; the method names and titles come from run_flags.json.
        from .run_flags import load as registry

        known = registry()
        params = notebooks.parse_params(a.p or [])
        if a.model:
            params["model"] = a.model
        method = params.get("method")
        if method and "options" not in params and "options" in notebooks.template_parameters(a.template):
            # The book's overrides of this method (make run), until make reset drops them.
            params.update(overrides.book_options(a.profile, method))
        title = known["titles"].get(method) if a.title_from_method else a.title
        notebooks.execute(a.template, a.output, a.profile, params, title, methods=known["methods"])
    elif a.book_command == "toc":
        from .run_flags import load as registry

        book.write_toc(a.out, registry()["methods"])
        if a.profile:  # the facts the static pages state about this build (its model, data, sizes)
            book.write_facts(a.profile, a.facts_dir, a.model)
    elif a.book_command == "timed":
        from vptlib.bench.output import book_time_record

        rec = book_time_record(a.profile, a.started, a.out, a.cpu_at_start, a.build_pid, a.stages)
        other = rec["other_work_cores"]
        beside = f", beside other work keeping {other:g} cores busy" if other else ""
        print(f"make book PROFILE={rec['profile']}: {rec['seconds']} s wall time{beside}")
    elif a.book_command == "pdf":
        from vptlib.study.pdf import print_pdf

        print(f"PDF: {print_pdf(a.html, a.out).resolve()}")
    elif a.book_command == "guard":
        from vptlib.study.profile import load

        book.guard(load(a.profile).profile, a.dir)  # the profile's own name: a dry run is another build
        book.write_banner(a.profile, a.dir)
    elif a.book_command == "clean":
        book.clean(a.dir)
    elif a.book_command == "rerun":
        rerun.rerun(a.profile_name, a.method, a.args, a.dir, a.model or None, a.stamps)
    elif a.book_command == "overrides":
        _overrides(a)


def _overrides(a: argparse.Namespace) -> None:
    from vptlib.study import overrides
    from vptlib.study.profile import load

    prof = load(a.profile, check_methods=False)
    file = overrides.path(prof.runs, prof.profile)
    gone: list[str] = []
    if a.drop is not None:
        gone = overrides.drop(file, a.drop or None)
        name = prof.profile.removesuffix("-dry-run")
        if gone:
            print(f"overrides dropped: {', '.join(gone)}; make book PROFILE={name} re-executes their pages")
        else:
            print(f"no overrides of {a.drop or 'any method'} in {file}: nothing to drop")
    if a.stamps:
        # Without --methods: every method already stamped there (make reset), so make sees the drop.
        stamped = sorted(p.stem for p in Path(a.stamps).glob("*.json"))
        overrides.write_stamps(file, a.stamps, a.methods or sorted({*stamped, *gone}))
    if a.drop is None and not a.stamps:
        found = overrides.load(file)
        print(f"{file}: " + ("; ".join(f"{m}: {v}" for m, v in found.items()) if found else "no overrides"))


def _profile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, help="the profile: a name in profiles/ (smoke) or its file")


def add_book_parser(sub) -> None:
    b = sub.add_parser(
        "book",
        help="build steps used by make book / make run",
        description="Steps of the report build; `make book` calls them in order.",
    )
    bsub = b.add_subparsers(dest="book_command", required=True, metavar="STEP")
    pf = bsub.add_parser("preflight", help="check that model and data can be had, fast")
    _profile_option(pf)
    pf.add_argument("--data", default=None, help="local Kaggle folder (Training/, Testing/)")
    pf.add_argument("--model", default=None, help="local model folder or hub id, overriding the profile")
    pf.add_argument("--stamp", default=None, help="write the inputs' identity here when it changed (make's dependency)")
    pf.add_argument("--overrides", default=None, help="write make's per-method override stamps into this folder")
    da = bsub.add_parser("data", help="create the profile's prepared data folder")
    _profile_option(da)
    da.add_argument("--data", default=None, help="local Kaggle folder instead of downloading")
    ex = bsub.add_parser("execute", help="run a template notebook with papermill")
    ex.add_argument("template", help="notebooks/NAME.ipynb")
    ex.add_argument("output", help="where the executed notebook goes")
    _profile_option(ex)
    ex.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"), help="a parameter, as papermill -p")
    ex.add_argument("--model", default=None, help="override the profile's model")
    ex.add_argument("--title", default=None, help="page title")
    ex.add_argument("--title-from-method", action="store_true", help="title the page after the method parameter")
    co = bsub.add_parser("toc", help="write the table of contents, one page per registered method")
    co.add_argument("--out", required=True, help="output YAML")
    co.add_argument("--profile", default=None, help="also write the build's facts for the static pages")
    co.add_argument("--facts-dir", default="book/generated", help="where the facts go (the generated pages)")
    co.add_argument("--model", default=None, help="the build's model, overriding the profile's (MODEL=)")
    ti = bsub.add_parser("timed", help="print make book's wall time and keep it with the machine (for the README)")
    _profile_option(ti)
    ti.add_argument("--started", type=float, required=True, help="when the build started (epoch seconds)")
    ti.add_argument("--out", required=True, help="the JSON record to write")
    ti.add_argument("--cpu-at-start", help="the cpu line of /proc/stat as the build started")
    ti.add_argument("--build-pid", type=int, help="make's process id (its reaped children are the build)")
    ti.add_argument("--stages", help="the file of 'STAGE EPOCH-SECONDS' lines: when each stage began")
    pd_ = bsub.add_parser("pdf", help="print the single-page book to a PDF with Chromium (make pdf)")
    pd_.add_argument("--html", required=True, help="the single-page HTML (jupyter-book build --builder singlehtml)")
    pd_.add_argument("--out", required=True, help="the PDF to write")
    gu = bsub.add_parser("guard", help="clear generated pages of another profile and write the build's banner")
    _profile_option(gu)
    gu.add_argument("--dir", required=True, help="generated pages folder")
    cl = bsub.add_parser("clean", help="delete the pages vptlib wrote (never a file of yours)")
    cl.add_argument("--dir", required=True, help="generated pages folder")
    rr = bsub.add_parser(
        "rerun",
        help="make run: re-execute one experiment page with new parameters",
        description="Validate the profile, the method and every -p name first; refuse (never "
        "clear) a generated folder of another profile; then execute.",
    )
    rr.add_argument("--profile-name", required=True, help="a profile name from profiles/")
    rr.add_argument("--method", required=True, help="the experiment's method")
    rr.add_argument("--args", default="", help='papermill parameters as one string: "-p lr 0.5 -p epochs 3"')
    rr.add_argument("--dir", required=True, help="generated pages folder")
    rr.add_argument("--model", default=None, help="override the profile's model")
    rr.add_argument("--stamps", default=None, help="make's folder of per-method override stamps")
    ov = bsub.add_parser(
        "overrides",
        help="show, drop or stamp the book's overrides (make run sets them, make reset drops them)",
    )
    _profile_option(ov)
    ov.add_argument("--drop", nargs="?", const="", default=None, metavar="METHOD", help="drop METHOD's, or every")
    ov.add_argument("--stamps", default=None, help="write make's per-method stamps into this folder")
    ov.add_argument("--methods", nargs="*", default=[], help="the methods to stamp (make's list)")
    b.set_defaults(func=_book)


def _sweep(a: argparse.Namespace) -> None:
    import dataclasses

    from vptlib.study.launch import parse_params
    from vptlib.study.profile import load
    from vptlib.study.sweep import run_sweep

    params = parse_params(a.submitit_param)
    if params and a.launcher != "submitit":
        raise UserError("--submitit-param applies to --launcher submitit only")
    profile = load(a.profile)
    if a.model:
        profile = dataclasses.replace(profile, model=a.model)
    df = run_sweep(
        profile,
        a.name,
        workers=a.workers,
        progress=not a.quiet,
        launcher=a.launcher,
        cluster=a.cluster,
        params=params,
    )
    done = df[df.error.fillna("") == ""]
    print(
        f"sweep {a.name}: {len(done)} of {len(df)} points finished; index in "
        f"{profile.runs}/{profile.profile}/sweeps/{a.name}.csv"
    )
    if len(done) < len(df):
        raise UserError(f"{len(df) - len(done)} points failed (listed above); rerun to retry only those")


def add_sweep_parser(sub) -> None:
    s = sub.add_parser(
        "sweep",
        help="run a profile's named grid of runs (make sweep)",
        description="Run every point of a profile's sweep as an independent run, over the "
        "visible GPUs or CPU workers, or through submitit (local subprocesses or SLURM jobs). "
        "Finished points are reused and interrupted ones resume.",
    )
    _profile_option(s)
    s.add_argument("--name", required=True, help="the sweep's name under `sweeps:` in the profile")
    s.add_argument(
        "--workers", type=count_arg, default=None, help="parallel jobs (default: one per GPU, else per 2 cores)"
    )
    s.add_argument("--model", default=None, help="override the profile's model")
    s.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="pool",
        help="pool: worker processes on this machine (default); submitit: jobs through submitit",
    )
    s.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default="local",
        help="with --launcher submitit: local subprocesses (default), slurm jobs, or debug (in this process)",
    )
    s.add_argument(
        "--submitit-param",
        action="append",
        metavar="NAME=VALUE",
        help="a submitit parameter, repeatable: slurm_partition=gpu timeout_min=120 gpus_per_node=1 ...",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_sweep)
