"""What ``make bench`` writes: the Markdown table (also into the README), and the figure."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from vptlib import atomic
from vptlib.threads import cores, cpu_ticks

from .peers import TARGET
from .timing import METHODS
from .verdicts import targets

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def cost_markdown(cost: dict) -> str:
    name = cost.get("profile", "full")
    sizes = (
        (f" ({cost['images'][0]:,} training, {cost['images'][1]:,} validation and {cost['images'][2]:,} test images)")
        if cost.get("images")
        else ""
    )
    lines = [
        f"Estimated cost of `make book PROFILE={name}`{sizes} on this machine at {cost['precision']}, from "
        "the measured step times (training and evaluation only):",
        "",
        "| part | runs | minutes |",
        "|---|---|---|",
    ]
    lines += [f"| {x['what']} | {x['runs']} | {x['seconds'] / 60:.1f} |" for x in cost["rows"]]
    lines += [f"| **total** | {sum(x['runs'] for x in cost['rows'])} | **{cost['total_seconds'] / 60:.0f}** |"]
    return "\n".join(lines)


def accuracy_markdown(check: dict) -> str:
    lines = [
        f"bf16 accuracy check (smoke profile, tiny model, test accuracy in %, mean over seeds "
        f"{check['seeds']}; target: within the tolerance, 1 point or one test image per seed):",
        "",
        "| method | fp32 | bf16 | bf16 - fp32 | tolerance | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['method']} | {x['fp32']:.2f} | {x['bf16']:.2f} | {x['diff']:+.2f} | {x.get('tolerance', 1.0):.2f} | "
        f"{'PASS' if x['ok'] else 'FAIL'} |"
        for x in check["rows"]
    ]
    return "\n".join(lines)


def _spread(v: dict[str, Any]) -> str:
    rs = v.get("rounds") or []
    return f"{min(rs):.3f} to {max(rs):.3f}" if len(rs) > 1 else "one round"


def markdown(r: dict[str, Any]) -> str:
    n_rounds = max(len(v.get("rounds") or [0]) for v in r["results"].values())
    lines = [
        f"Machine: {r['machine']} ({r['device']}); batch {r['batch']}; torch {r['torch']}; "
        f"{'tiny test model' if r['tiny'] else 'ViT-B/32 architecture, random weights'}; "
        f"{n_rounds} interleaved round(s), median of rounds shown",
        "",
        "| configuration | precision | s / step | range over rounds | images / s | peak memory (GB) | "
        "GFLOP / step | % of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in sorted(r["results"].values(), key=_row_order):  # a record saved with sorted keys reads as measured
        lines.append(
            f"| {v['kind']} | {v['precision']} | {v['seconds_per_step']:.3f} | {_spread(v)} | "
            f"{v['images_per_s']:.1f} | {v['peak_bytes'] / 1e9:.2f} | {_flops(r, v)} |"
        )
    lp = r["linear_probe"]
    lines += [
        "",
        f"Linear probe, 15 epochs on {lp['images']} training images (derived from the measured step "
        f"times): {lp['cached_s']:.1f} s with the feature cache, {lp['recompute_s']:.1f} s recomputing "
        f"the backbone every epoch.",
        "",
        f"Data pipeline: {r['data_images_per_s']:.0f} images/s (uint8 cache + augmentation + normalisation).",
        "",
        "A ratio target is computed in each round from configurations measured side by side; it gets "
        "PASS or FAIL only when every round agrees, else `noisy: rerun` (the machine was busy).",
        *(
            [
                "A VPT step is compared with the frozen backbone's no-grad forward timed in the step's own "
                "process, the two called in turn (the forward row above is a separate process)."
            ]
            if any("plain_forward_rounds" in v for v in r["results"].values())
            else []
        ),
        *peers_markdown(r),
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in targets(r)]
    if r.get("accuracy_check"):
        lines += ["", accuracy_markdown(r["accuracy_check"])]
    for cost in r.get("study_costs") or ([r["study_cost"]] if r.get("study_cost") else []):
        lines += ["", cost_markdown(cost)]
    if not r["bf16_fast"]:
        lines += [
            "",
            "N/A: this device has no fast bf16 (no AVX512-BF16/AMX or CUDA bf16), so the bf16 "
            "speed target does not apply here, and bf16 was not measured unless --force-bf16.",
        ]
    return "\n".join(lines) + "\n"


def _gflop_and_peak(r: dict[str, Any], flops: float | None, seconds: float, precision: str) -> str:
    peak = (r.get("peak_flops") or {}).get(precision)
    if not flops:
        return "- | -"
    share = f"{100 * flops / seconds / peak:.1f}" if peak else "-"
    return f"{flops / 1e9:.1f} | {share}"


def _flops(r: dict[str, Any], v: dict[str, Any]) -> str:
    return _gflop_and_peak(r, v.get("flops_per_step"), v["seconds_per_step"], v["precision"])


PEER_NAMES = {"vptlib": "vptlib", "kmnp": "KMnP/vpt-style port", "hf": "HF whole layers"}


def peers_markdown(r: dict[str, Any]) -> list[str]:
    """The peers' table: each implementation's step beside vptlib's, in one process."""
    if not r.get("peers"):
        return []
    peak = r.get("peak_flops") or {}
    lines = [
        "",
        "Matmul peak of this machine (best `torch.mm` of two 4096 x 4096 matrices): "
        + ", ".join(f"{p} {v / 1e12:.2f} TFLOP/s" for p, v in peak.items())
        + ". FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one step (a multiply-add is two).",
        "",
        "VPT beside its peers (`vptlib.bench.peers`): the same weights, prompts and batch, timed in turn in one "
        "process; each first checked to give vptlib's fp32 logits and prompt gradients within 1e-4. "
        "Memory: bytes autograd keeps for the backward (weights not counted).",
        "",
        "| method | precision | code | s / step | × vptlib (range over rounds) | "
        "saved for backward (MB) | GFLOP / step | % of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, peers in r["peers"].items():
        kind, prec = key.split("/")
        for name, label in PEER_NAMES.items():
            v = peers[name]
            over = [a / b for a, b in zip(v["rounds"], peers["vptlib"]["rounds"], strict=True)]
            shown = f"{statistics.median(over):.2f} ({min(over):.2f} to {max(over):.2f})"
            lines.append(
                f"| {kind} | {prec} | {label} | {v['seconds_per_step']:.3f} | {shown} | "
                f"{v['saved_bytes'] / 1e6:.0f} | {_gflop_and_peak(r, v['flops_per_step'], v['seconds_per_step'], prec)} |"
            )
    needed = [
        f"{key} {100 * p['vptlib']['flops_per_step'] / (TARGET * p['kmnp']['seconds_per_step']) / peak[prec]:.0f}%"
        for key, p in r["peers"].items()
        if (prec := key.split("/")[1]) in peak
    ]
    if needed:  # how far the target is from what the machine can do
        lines += [
            "",
            f"The matmul floor: to take {TARGET}x the KMnP-style step's time, vptlib's step would have to run "
            f"its FLOPs at this share of the matmul peak: {', '.join(needed)}.",
        ]
    return lines


def _row_order(v: dict) -> tuple[int, int]:
    """The forward first, then the methods in the registry's order, fp32 before bf16."""
    from vptlib.methods import METHODS

    kinds = ["forward", *METHODS]
    precisions = ["fp32", "bf16"]
    return (
        kinds.index(v["kind"]) if v["kind"] in kinds else len(kinds),
        precisions.index(v["precision"]) if v["precision"] in precisions else len(precisions),
    )


def update_readme(readme: Path, md: str, markers: tuple[str, str] = (README_START, README_END)) -> bool:
    """Replace the README's section between ``markers`` (the benchmark's by default) with ``md``."""
    start, end = markers
    text = readme.read_text() if readme.is_file() else ""
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic.write_text(readme, f"{head}{start}\n{md.rstrip()}\n{end}{tail}")
    return True


SCALING_MARKERS = ("<!-- bench-scaling:start -->", "<!-- bench-scaling:end -->")
BOOK_TIME_MARKERS = ("<!-- book-time:start -->", "<!-- book-time:end -->")


def _short(commit: str) -> str:
    """A commit's first 12 hex digits, keeping its ``-dirty`` mark."""
    sha, _, mark = commit.partition("-")
    return sha[:12] + (f"-{mark}" if mark else "")


def book_time_record(
    profile_path: str | Path,
    started: float,
    out: str | Path,
    cpu_at_start: str | None = None,
    build_pid: int | None = None,
    stages: str | Path | None = None,
) -> dict[str, Any]:
    """What ``make book`` measured: its wall time since ``started`` (epoch seconds), the machine,
    and how many finished runs of the profile (its main study, sweeps and variants) it trained
    (their record is newer than the start) or reused; written to ``out`` for :func:`book_time_markdown`.

    With ``cpu_at_start`` (the Makefile's ``BOOK_CPU``) and ``build_pid`` (make's process: its
    reaped children's CPU time is the build's), it also says how busy other work kept the
    machine: :func:`other_work`. With ``stages`` (the Makefile's marks), the seconds of each
    stage: :func:`book_stages`."""
    import datetime
    import os
    import time

    import torch

    from vptlib.runs import provenance, records
    from vptlib.study.profile import load
    from vptlib.study.variants import variants

    from .timing import machine_name

    prof = load(profile_path, check_methods=False)  # the build checked it; its models may be elsewhere now
    # Every runs folder the build writes: the main study's, each sweep's and each variant's.
    names = [prof.profile, *(f"{prof.profile}-{s}" for s in prof.sweeps), *(v.profile.profile for v in variants(prof))]
    roots = [r for r in (records.profile_folder(prof.runs, n) for n in names) if r.is_dir()]
    done = [p for root in roots for p in root.rglob(records.METRICS)]
    trained = sum(p.stat().st_mtime >= started for p in done)
    rec = {
        "profile": prof.profile,
        "seconds": round(time.time() - started),
        # The cores the build could use, not the threads this process was given: under load
        # those are fewer, and the loaded build's record must name the idle one's machine.
        "machine": machine_name(torch.device("cpu"), threads=cores()),
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "commit": _short(provenance.git_commit()),
        "runs_trained": trained,
        "runs_reused": len(done) - trained,
        # What else the time holds: the environment's install (make's stamp of it) and the
        # offline model (a tiny CLIP's warm-up), when this build made them.
        "installed": _made_since(Path(".venv") / ".installed", started),
        "model_built": _made_since(Path(prof.model) / "model.safetensors", started),
        "other_work_cores": other_work(cpu_at_start, build_pid),
        "stages": book_stages(stages, started, time.time()),
    }
    atomic.write_json(out, rec)
    return rec


def book_stages(marks: str | Path | None, started: float, ended: float) -> dict[str, int] | None:
    """Seconds each stage of ``make book`` took, from the Makefile's marks ("STAGE SECONDS"
    lines, each when a stage began): the install is from ``started`` to the first mark, each
    stage lasts until the next, the last until ``ended``. None without marks."""
    try:
        lines = [ln.split() for ln in Path(marks).read_text().splitlines() if ln.strip()] if marks else []
        begun = [("install", started), *((name, float(t)) for name, t in lines)]
    except (OSError, ValueError):
        return None
    if len(begun) < 2:
        return None
    ends = [t for _, t in begun[1:]] + [ended]
    return {name: round(max(0.0, end - t)) for (name, t), end in zip(begun, ends, strict=True)}


# A record whose machine had at least this many cores' worth of other work on average is a
# build under load: kept beside the idle one, not in its place.
LOADED_CORES = 0.5
PROC_STAT = Path("/proc/stat")


def _busy_ticks(cpu_line: str) -> int:
    """Clock ticks the machine's CPUs spent working: a /proc/stat ``cpu`` line less idle and iowait."""
    idle, total = cpu_ticks(cpu_line)
    return total - idle


def _children_ticks(pid: int) -> int:
    """Clock ticks of ``pid``'s reaped children, theirs included (cutime + cstime, /proc/PID/stat
    fields 16 and 17; counted after the command name, which may hold spaces)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[13]) + int(fields[14])


def other_work(cpu_at_start: str | None, build_pid: int | None) -> float | None:
    """Cores kept busy by other processes while the build ran, on average. ``cpu_at_start`` is
    "SECONDS BUILD_TICKS CPU_LINE" (the Makefile's ``BOOK_CPU``: epoch seconds, make's reaped
    children's ticks, the machine's ``cpu`` line of /proc/stat); from then to now, the machine's
    busy ticks less the build's own, over the seconds. None where unknown (no /proc, a window
    under a second)."""
    import os
    import time

    try:
        stamp, build0, line = cpu_at_start.split(None, 2)
        seconds = time.time() - float(stamp)
        now = PROC_STAT.read_text().split("\n", 1)[0]
        build = _children_ticks(build_pid) - int(build0)
        ticks = _busy_ticks(now) - _busy_ticks(line) - build
    except (AttributeError, TypeError, OSError, ValueError, IndexError):
        return None
    if seconds < 1:
        return None
    return round(max(0.0, ticks / os.sysconf("SC_CLK_TCK") / seconds), 1)


def loaded(rec: dict[str, Any]) -> bool:
    """Whether a build ran beside other work (:data:`LOADED_CORES` or more)."""
    return (rec.get("other_work_cores") or 0.0) >= LOADED_CORES


def _made_since(path: Path, started: float) -> bool:
    return path.is_file() and path.stat().st_mtime >= started


def _min_s(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def book_time_markdown(rec: dict[str, Any], idle: dict[str, Any] | None = None) -> str:
    """The README's sentence on how long a build took, from ``make book``'s own record; for a
    build under load, with ``idle`` (the same machine's idle build) to compare with."""
    beside = ""
    if loaded(rec):
        beside = f" beside other work that kept {rec['other_work_cores']:g} of its cores busy on average"
        if idle:
            beside += f" ({rec['seconds'] / idle['seconds']:.1f} times the idle build's time above)"
    return (
        f"Measured: `make book PROFILE={rec['profile']}` took {_min_s(rec['seconds'])} of wall time on "
        f"`{rec['machine']}` ({rec['cpus']} CPUs, {rec['gpu']}){beside} on {rec['date']} at commit "
        f"`{rec['commit']}`; it trained {rec['runs_trained']} runs and reused {rec['runs_reused']} finished "
        f"ones, {_included(rec)}{_stage_text(rec)}. Rendered by `python -m vptlib.bench --render-book` "
        f"from the record that build left in `_build/book-time-{rec['profile']}.json`."
    )


STAGE_NAMES = {"install": "install", "models": "models and data", "checks": "checks", "pages": "pages", "html": "HTML"}


def _stage_text(rec: dict[str, Any]) -> str:
    """ "; by stage: install 1 min 50 s, ..." from the record's stages (older records: nothing)."""
    stages = rec.get("stages") or {}
    if not stages:
        return ""
    # In the build's order, whatever order the record's keys came back in (it is written sorted).
    order = [k for k in STAGE_NAMES if k in stages] + [k for k in stages if k not in STAGE_NAMES]
    return "; by stage: " + ", ".join(f"{STAGE_NAMES.get(k, k)} {_min_s(stages[k])}" for k in order)


def book_time_key(rec: dict[str, Any], under_load: bool | None = None) -> str:
    """The kept record's file name: one idle and one loaded build per profile and machine
    (``under_load``: that one's name; by default, the one ``rec`` is)."""
    under_load = loaded(rec) if under_load is None else under_load
    return f"book-{rec['profile']}-{rec['machine']}{'-loaded' if under_load else ''}.json"


def book_time_block(kept: Path, rec: dict[str, Any]) -> str:
    """The README's section: the idle build of ``rec``'s profile and machine kept in ``kept``,
    then the build under load, where one is kept."""
    import json

    def read(under_load: bool) -> dict[str, Any] | None:
        path = kept / book_time_key(rec, under_load)
        return json.loads(path.read_text()) if path.is_file() else None

    idle, busy = read(False), read(True)
    parts = [book_time_markdown(idle)] if idle else []
    if busy:
        parts.append(book_time_markdown(busy, idle))
    return "\n\n".join(parts)


def _included(rec: dict[str, Any]) -> str:
    """What the measured time holds besides the pages, as the record says (older records: neither)."""
    made = [what for key, what in (("installed", "the install"), ("model_built", "the model's build")) if rec.get(key)]
    if len(made) == 2:
        return "the install and the model's build included (a fresh clone)"
    if made:
        return f"{made[0]} included"
    return "with the environment and the model already in place"


def plot(r: dict[str, Any], path: Path) -> None:
    """Seconds per step (with the range over rounds) and peak memory of every configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["forward", *METHODS]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    measured = [p for p in ("fp32", "bf16") if f"forward/{p}" in r["results"]]
    for i, prec in enumerate(measured):
        xs = [j + 0.4 * i for j in range(len(kinds))]
        res = [r["results"].get(f"{k}/{prec}", {"seconds_per_step": 0.0, "peak_bytes": 0.0}) for k in kinds]
        mid = [v["seconds_per_step"] for v in res]
        lo = [m - min(v.get("rounds") or [m]) for m, v in zip(mid, res, strict=True)]
        hi = [max(v.get("rounds") or [m]) - m for m, v in zip(mid, res, strict=True)]
        axes[0].bar(xs, mid, width=0.4, label=prec, yerr=[lo, hi], capsize=2)
        axes[1].bar(xs, [v["peak_bytes"] / 1e9 for v in res], width=0.4, label=prec)
    for ax, label in zip(axes, (f"seconds per step (batch {r['batch']})", "peak memory (GB)"), strict=True):
        ax.set_xticks([j + 0.2 for j in range(len(kinds))], kinds, rotation=20)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(r["machine"], fontsize=9)
    fig.tight_layout()
    atomic.atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
