"""A notebook's parameters, and ``make run``: one experiment page re-executed with new settings.

papermill sets only the names a template's ``parameters`` cell declares. The experiment
template declares ``profile_path``, ``method``, ``model`` and ``options``: a mapping of
overrides by name, either a training setting of :class:`~vptlib.runs.config.RunConfig`
(``epochs``, ``lr``, ...) or one of the method's own options (``prompt_tokens``,
``rank``, ...). ``make run NB=vision_lora ARGS="-p rank 4"`` gathers every ``-p`` name
that is not a template parameter into ``options``, so any method's options can be set
without the template naming them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from vptlib import REPO
from vptlib.errors import UserError

from . import overrides
from .book import guard, load_profile
from .notebooks import check_params, execute, parse_params, template_parameters

EXPERIMENT = REPO / "notebooks" / "experiment.ipynb"
OPTIONS = "options"  # the experiment template's mapping of overrides


def parse_args_string(args: str) -> dict[str, Any]:
    """``make run``'s ``ARGS="-p lr 0.5 -p prompt_tokens 10"``, split as a shell would, never run by one."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise UserError(f"ARGS={args!r}: {exc}") from None
    pairs = []
    while words:
        if len(words) < 3 or words[0] not in ("-p", "--parameters"):
            raise UserError(f"ARGS={args!r}: expected pairs like -p NAME VALUE")
        pairs.append([words[1], words[2]])
        words = words[3:]
    return parse_params(pairs)


def experiment_params(method: str, given: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The experiment template's parameters for ``make run``: the template's own names as
    they are, every other name an override in ``options`` (checked against the method now,
    so a misspelt option fails before anything runs)."""
    from vptlib.runs.config import override_names

    declared = template_parameters(EXPERIMENT)
    params: dict[str, Any] = {"method": method}
    options = dict(given.pop(OPTIONS, None) or {})
    for name, value in given.items():
        if name in declared:
            params[name] = value
        else:
            options[name] = value
    check_params(EXPERIMENT, params)
    known = override_names(params["method"])
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        raise UserError(
            f"unknown parameter {names}: not a setting of a run or of {params['method']}; known: "
            f"{', '.join(sorted(declared - {OPTIONS, 'profile_path'}))}, {', '.join(known)}"
        )
    if model:
        params["model"] = model
    if options:
        params[OPTIONS] = options
    return params


def rerun(
    profile_name: str,
    method: str,
    args: str,
    generated: str | Path,
    model: str | None = None,
    stamps: str | Path | None = None,
) -> Path:
    """``make run``: validate everything, check the build's profile, keep the overrides in the
    book's one place (:mod:`.overrides`; ``stamps``: make's per-method stamps), then execute
    one experiment page with them."""
    if not re.match(r"^[A-Za-z0-9_.-]+$", profile_name or ""):
        raise UserError(f"PROFILE={profile_name!r}: a profile name from profiles/")
    profile_path = REPO / "profiles" / f"{profile_name}.yaml"
    load_profile(profile_path)
    params = experiment_params(method, parse_args_string(args), model)
    from vptlib.methods import METHODS

    from .profile import load

    prof = load(profile_path)
    _check_values(prof, params)
    guard(prof.profile, generated, clear=False)
    # Kept before the page executes: if it fails or is interrupted, the stamp is newer than the
    # page and the next make book executes it again, with these overrides.
    file = overrides.path(prof.runs, prof.profile)
    overrides.set_method(file, params["method"], dict(params.get(OPTIONS) or {}))
    if stamps is not None:
        overrides.write_stamps(file, stamps, [params["method"]])
    page = Path(generated) / "experiments" / f"{params['method']}.ipynb"
    return execute(EXPERIMENT, page, profile_path, params, METHODS[params["method"]].title)


def _check_values(prof, params: dict[str, Any]) -> None:
    """The overrides' values, typed and validated as the run will read them (``-p epochs 2.5``,
    ``-p optimizer adam``), so a bad one is one line here, not a failed page."""
    from vptlib.runs.config import validate

    try:
        cfg = prof.run_config(params["method"], data=".", **dict(params.get(OPTIONS) or {}))
        validate(cfg.resolved())
    except TypeError as exc:
        raise UserError(f"ARGS: {exc}") from None
