"""The Reproducibility page: which run each row uses, the commands that remake it, the environment."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vptlib import REPO
from vptlib.runs import records

from .loading import TITLES, latest_runs, short_commit


def provenance(runs: str | Path, profile: str) -> pd.DataFrame:
    """Every run behind the report: what ran it and what it read, one row per method."""
    rows = []
    for method, run_dir in latest_runs(runs, profile).items():
        c = records.read_config(run_dir)
        source = c.get("model_source") or {}  # runs recorded before the model's source was
        weights = ", ".join(f"{name} sha256 {sha}" for name, sha in (source.get("weights") or {}).items())
        rows.append(
            {
                "method": TITLES[method],
                "run id": run_dir.name,
                "git commit": short_commit(c["git_commit"]),
                "model": c["model"],
                "model commit": source.get("commit") or "not recorded",
                "weights": weights or "not recorded",
                "model fingerprint": c["model_fingerprint"],
                "manifest hash": c["manifest_hash"],
                "device": c["device"],
                "torch": c["versions"]["torch"],
                "transformers": c["versions"]["transformers"],
            }
        )
    return pd.DataFrame(rows)


# The page's two views of provenance(), each narrow enough for the article column: long
# hashes cut to their first 12 hex digits (the full ones are in each run's config.json).
SHORT_HASH = 12


def _short(text: str) -> str:
    """Every 64-hex-digit sha256 (and a 40-digit commit) in ``text`` cut to its first digits."""
    import re

    return re.sub(rf"\b([0-9a-f]{{{SHORT_HASH}}})[0-9a-f]{{28,}}\b", r"\1", text)


def runs_table(runs: str | Path, profile: str) -> pd.DataFrame:
    """Which run each method's row uses and what ran it: the code's commit, the device, the libraries."""
    table = provenance(runs, profile)
    if table.empty:
        return pd.DataFrame(columns=["method", "run id", "git commit", "device", "libraries"]).set_index("method")
    table["libraries"] = "torch " + table["torch"] + ", transformers " + table["transformers"]
    return table[["method", "run id", "git commit", "device", "libraries"]].set_index("method")


def inputs_table(runs: str | Path, profile: str) -> pd.DataFrame:
    """What each run read: the model (where, its commit, its weights' sha256, the fingerprint of
    the weights as loaded) and the data manifest's hash."""
    table = provenance(runs, profile)
    columns = ["method", "model", "model commit", "weights (sha256)", "model fingerprint", "manifest hash"]
    if table.empty:
        return pd.DataFrame(columns=columns).set_index("method")
    table["model commit"] = table["model commit"].map(_short)
    # One weights file (the usual case): its hash alone; several: each file's name before its hash.
    table["weights (sha256)"] = table["weights"].map(
        lambda w: _short(w.split(" sha256 ", 1)[1] if w.count(" sha256 ") == 1 else w.replace(" sha256 ", " "))
    )
    for column in ("model fingerprint", "manifest hash"):
        table[column] = table[column].map(lambda h: str(h)[:SHORT_HASH])
    return table[columns].set_index("method")


_FLAGS = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "optimizer": "--optimizer",
    "schedule": "--schedule",
    "warmup": "--warmup",
    "seed": "--seed",
    "precision": "--precision",
    "grad_clip": "--grad-clip",
    "early_stopping": "--early-stopping",
    "select": "--select",
    "train_per_class": "--train-per-class",
    "epoch_steps": "--epoch-steps",
}


def run_command(config: dict) -> str:
    """The `vptlib run` command line that repeats a recorded run."""
    parts = ["vptlib run", f"--method {config['method']}", f"--data {config['data']}", f"--model {config['model']}"]
    parts += [f"{flag} {config[k]}" for k, flag in _FLAGS.items() if config.get(k) is not None]
    from vptlib.methods import command_line_options

    opts = config.get("method_options", {})
    for k, (flag, typ, _) in command_line_options().items():
        if typ is bool:
            parts += [flag] if opts.get(k) else []
        elif opts.get(k) is not None:
            parts.append(f"{flag} {opts[k]}")
    if not config.get("augment", True):
        parts.append("--no-augment")
    parts += [flag for k, flag in (("test_curves", "--test-curves"), ("compile", "--compile")) if config.get(k)]
    parts += [f"--profile {config['profile']}", f"--out {config['out']}"]
    return " ".join(parts)


def run_commands_markdown(runs: str | Path, profile: str) -> str:
    lines = []
    for method, run_dir in latest_runs(runs, profile).items():
        cfg = records.read_run(run_dir)["config"]
        lines += [f"**{TITLES[method]}** (`{run_dir.name}`)", "", "```bash", wrap_command(run_command(cfg)), "```", ""]
    return "\n".join(lines)


def commands_markdown(profile: str) -> str:
    return "\n".join(
        [
            "```bash",
            f"make book PROFILE={profile}",
            f'make run PROFILE={profile} NB=vpt_deep ARGS="-p prompt_tokens 10 -p lr 0.5"',
            f"make book PROFILE={profile}   # re-executes only that page, the results and this page",
            "```",
        ]
    )


def environment_table() -> pd.DataFrame:
    """Every package vptlib runs on (its installed runtime requirements, which decide the
    numbers), the Python, platform and device, each with the version the lock
    (``requirements.txt``) pins, so a build on other versions shows where it differs."""
    import platform
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    import torch

    pins = {}
    lock = REPO / "requirements.txt"
    for line in lock.read_text().splitlines() if lock.is_file() else []:
        name, _, pinned = line.split("#")[0].strip().partition("==")
        if pinned:
            pins[name.lower().replace("_", "-")] = pinned
    rows = {"python": (platform.python_version(), "–"), "vptlib": (version("vptlib"), "–")}
    for text in requires("vptlib") or []:
        if "extra ==" in text:
            continue  # the book, test and dev tools decide no number
        name = re.split(r"[<>=!~;\[ ]", text, maxsplit=1)[0].lower().replace("_", "-")
        try:
            rows[name] = (version(name), pins.get(name, "–"))
        except PackageNotFoundError:
            rows[name] = ("not installed", pins.get(name, "–"))
    rows["platform"] = (platform.platform(), "–")
    rows["CUDA (torch build)"] = (str(torch.version.cuda), "–")
    rows["CUDA available"] = (str(torch.cuda.is_available()), "–")
    rows["CPU threads"] = (str(torch.get_num_threads()), "–")
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["installed", "pinned (requirements.txt)"])
    table["same"] = [
        "–" if p == "–" else ("yes" if i.split("+")[0] == p else "no") for i, p in table.itertuples(index=False)
    ]
    return table


WRAP = 88  # characters per line of a shown command: a book column shows it whole


def wrap_command(command: str, width: int = WRAP) -> str:
    """``command`` over lines of at most ``width`` characters (where its words allow), each
    option kept with its value and the lines joined by shell continuations."""
    words = command.split(" ")
    groups, i = [], 0
    while i < len(words):  # "--flag value" stays together
        take = 2 if words[i].startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--") else 1
        groups.append(" ".join(words[i : i + take]))
        i += take
    lines, line = [], ""
    for g in groups:
        if line and len(line) + 1 + len(g) > width - 2:
            lines.append(line)
            line = "  " + g
        else:
            line = f"{line} {g}" if line else g
    lines.append(line)
    return " \\\n".join(lines)


def benchmark_markdown(folder: str | Path | None = None) -> str:
    """The newest `make bench` table (benchmarks/results/<machine>.md) and, after it, the newest
    record of how the work grows with the data (scaling-<machine>.md), or how to produce one."""
    folder = Path(folder) if folder else REPO / "benchmarks" / "results"

    def newest(pattern: str, exclude: tuple[str, ...] = ()) -> Path | None:
        found = [p for p in folder.glob(pattern) if not p.stem.endswith("-tiny") and not p.name.startswith(exclude)]
        return max(found, key=lambda p: (p.stat().st_mtime, p.name), default=None)

    table = newest("*.md", exclude=("scaling-", "book-"))
    if table is None:
        return "No benchmark has been recorded yet: run `make bench`."
    out = f"From `benchmarks/results/{table.name}`, written by `make bench`:\n\n" + table.read_text()
    scaling = newest("scaling-*.md")
    if scaling is not None:
        out += (
            f"\nHow the work grows with the data, from `benchmarks/results/{scaling.name}`:\n\n" + scaling.read_text()
        )
    return out
