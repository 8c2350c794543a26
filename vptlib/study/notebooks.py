"""Executing a template notebook: its declared parameters checked, papermill run into the
output atomically, the page titled and its injected-parameters cell hidden."""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from vptlib import atomic, switches
from vptlib.errors import UserError

from .book import load_profile, record_output

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEARTBEAT_S = 60.0  # a quiet page still prints a line this often while it executes


def template_parameters(template: str | Path) -> set[str]:
    """The names a template's ``parameters`` cell defines: the only ones papermill may set."""
    import papermill as pm

    return set(pm.inspect_notebook(str(template)))


def check_params(template: str | Path, params: dict[str, Any], methods: Collection[str] | None = None) -> None:
    """Refuse a parameter the template does not declare, before anything runs.

    papermill writes each name into the notebook as code, so an unchecked name is code
    injection (``-p 'import os; os.system(...)#' 1``); values are written as literals.
    """
    known = template_parameters(template)
    for name in params:
        if not _IDENTIFIER.match(name) or name not in known:
            raise UserError(f"unknown parameter {name!r} for {Path(template).name}; known: {', '.join(sorted(known))}")
    method = params.get("method")
    if method is not None:
        if methods is None:  # the registry (imports torch); the book's executor passes run_flags' names
            from vptlib.methods import METHODS as methods
        if method not in methods:
            raise UserError(f"unknown method {method!r}; choose one of: {', '.join(methods)}")


def parse_params(pairs: list[list[str]]) -> dict[str, Any]:
    """``-p KEY VALUE`` pairs, values parsed as YAML scalars like papermill does. A name given
    twice is refused: papermill would keep the last and drop the other without a word."""
    twice = sorted({k for k, _ in pairs if sum(1 for j, _ in pairs if j == k) > 1})
    if twice:
        raise UserError(f"-p {', '.join(twice)} is given twice; give each parameter once")
    try:
        return {k: yaml.safe_load(v) for k, v in pairs}
    except yaml.YAMLError as exc:
        raise UserError(f"a -p value is not a YAML scalar: {str(exc).splitlines()[0]}") from None


def execute(
    template: str | Path,
    output: str | Path,
    profile_path: str | Path,
    params: dict[str, Any],
    title: str | None = None,
    methods: Collection[str] | None = None,
) -> Path:
    """Run a template notebook with papermill into ``output``, atomically, and title its page.

    What the page's code prints (each grid point, seed and epoch) reaches the terminal as it
    happens, a quiet stretch still prints a line every :data:`HEARTBEAT_S`, and a cell that
    runs past :func:`vptlib.switches.cell_timeout` stops the build with one line.
    """
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    output = Path(output)
    check_params(template, params, methods)
    # A bad profile is one line here, not a failed notebook; its method names were checked by
    # the build's preflight (check_methods imports torch, which this process does not need).
    load_profile(profile_path, check_methods=False)
    timeout = switches.cell_timeout()
    # Every template takes the profile's path and reads the profile itself (vptlib.study.profile).
    parameters = {"profile_path": str(profile_path), **params}
    output.parent.mkdir(parents=True, exist_ok=True)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    print(f"executing {output} ({shown})", flush=True)
    env_before = {name: os.environ.get(name) for name in ("VPTLIB_STATIC", switches.BOOK)}
    os.environ["VPTLIB_STATIC"] = "1"
    os.environ[switches.BOOK] = "1"  # this page may name the runs the book shows (tuning.in_book)

    # The kernel process's own stderr (not its cells' output, which papermill relays): its TCP
    # warning at start and, when the build is interrupted mid-cell, the zmq traceback it logs
    # as its sockets close under it. Kept in a file beside the page, not shown at the user.
    kernel_log = output.parent / f".{output.stem}.kernel.log"
    output.parent.mkdir(parents=True, exist_ok=True)
    record_output(kernel_log)  # vptlib's to delete with the pages (make clean)

    def keep_failed(tmp: Path) -> Path:
        failed = output.with_suffix(".failed.ipynb")
        if tmp.is_file():
            shutil.copyfile(tmp, failed)
            record_output(failed)
        return failed

    def write(tmp: Path) -> None:
        # Relative paths in profiles (data/, runs/, models/) are relative to where make runs.
        try:
            with warnings.catch_warnings(), Heartbeat(f"executing {output}"):
                # The temporary name ends in .tmp (so no glob of the book picks it up); papermill
                # would warn about that once per page.
                warnings.filterwarnings("ignore", message="The specified file .* does not end in one of")
                pm.execute_notebook(
                    str(template),
                    str(tmp),
                    parameters=parameters,
                    cwd=os.getcwd(),
                    kernel_name="python3",
                    progress_bar=False,
                    report_mode=False,
                    execution_timeout=timeout,
                    stdout_file=sys.stdout,
                    stderr_file=sys.stderr,
                    kernel_manager_class=_kernel_manager(kernel_log),
                )
        except pm.PapermillExecutionError as exc:
            raise UserError(
                f"{template} failed for {params}: {exc.ename}: {exc.evalue} (see {keep_failed(tmp)})"
            ) from None
        except DeadKernelError:
            raise UserError(
                f"{template} ({shown or 'no parameters'}): the notebook's kernel died (out of memory?); its own "
                f"messages are in {kernel_log} (see {keep_failed(tmp)})"
            ) from None
        except CellTimeoutError:
            raise UserError(
                f"{template} ({shown or 'no parameters'}): a cell ran past the {timeout} s limit and was stopped "
                f"(see {keep_failed(tmp)}); raise it with make ... TIMEOUT=<seconds> "
                f"({switches.CELL_TIMEOUT}; 0: no limit)"
            ) from None
        nb = nbformat.read(tmp, as_version=4)
        # Progress bars rendered as ipywidgets leave widget state behind, which makes
        # myst-nb load widget JavaScript from a CDN; the static report needs none.
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:  # papermill's injected parameters: not part of the report
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        unique_figure_names(nb, output.stem)
        if title:
            first = next(c for c in nb.cells if c.cell_type == "markdown")
            lines = first.source.splitlines()
            first.source = "\n".join([f"# {title}", *lines[1:]])
        nbformat.write(nb, str(tmp))

    try:
        atomic.atomic_write(output, write)  # group-readable like any file, and whole or not at all
        kernel_log.unlink(missing_ok=True)  # kept only when the page failed or was interrupted
        record_output(output)
        output.with_suffix(".failed.ipynb").unlink(missing_ok=True)  # an earlier failure, now healed
    finally:
        for name, value in env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return output


def _kernel_manager(log: Path) -> type:
    """jupyter_client's kernel manager with the kernel's stderr written to ``log``."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as stderr:  # the child keeps its own descriptor
                await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": stderr})

    return LoggedKernelManager


def unique_figure_names(nb: Any, page: str) -> None:
    """Prefix each captioned figure's name (a cell's ``mystnb.figure.name``) with its page's.

    A template's names are its own; ten experiment pages from one template would give
    Sphinx ten ``fig-training`` labels (a duplicate-label warning, which fails the build).
    """
    for cell in nb.cells:
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        if figure.get("name") and not figure["name"].startswith(f"{page}-"):
            figure["name"] = f"{page}-{figure['name']}"


class Heartbeat:
    """While its block runs, prints ``what`` and the minutes elapsed every :data:`HEARTBEAT_S`,
    so a page whose cells print nothing for a while (a feature cache, an audit) is seen alive."""

    def __init__(self, what: str, every: float | None = None):
        self.what, self.every = what, HEARTBEAT_S if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.every):
            print(f"... still {self.what}: {(time.monotonic() - started) / 60:.1f} min", flush=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
