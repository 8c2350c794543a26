"""``make bench`` / ``python -m vptlib.bench``: measure every configuration in interleaved
rounds, give the verdicts, estimate the study's cost, write the results."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from vptlib import GUIDE, REPO, atomic
from vptlib.models.offline import tiny_clip_config
from vptlib.runs.devices import bf16_supported, pick_device

from . import __doc__ as PACKAGE_DOC
from .output import SCALING_MARKERS, cost_markdown, markdown, plot, update_readme
from .peers import matmul_peak, measure_peers
from .scaling import markdown as scaling_markdown
from .scaling import measure_scaling
from .timing import METHODS, data_throughput, machine_name, measure, one_process, run_json
from .verdicts import accuracy_check, study_cost

RESULTS = REPO / "benchmarks" / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vptlib.bench", description=PACKAGE_DOC.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all configurations (median shown)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls at least; more until two agree within 10%%")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="the tiny test model instead of ViT-B/32 (for tests)")
    p.add_argument("--force-bf16", action="store_true", help="measure bf16 even where it is only emulated")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    p.add_argument("--compile", action="store_true", help="also measure VPT steps under torch.compile (opt-in)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the bf16 accuracy check (smoke profile)")
    p.add_argument("--render", metavar="JSON", help="rewrite the .md, .png and README section from a saved result")
    p.add_argument(
        "--render-book", metavar="JSON", help="keep a make book time record and rewrite the README's sentence on it"
    )
    p.add_argument(
        "--peers-only",
        action="store_true",
        help="measure only the peers (KMnP-style, HF whole-layer) and the matmul peak, into this machine's saved result",
    )
    p.add_argument(
        "--scaling-only",
        action="store_true",
        help="measure only how prepare, the caches and a VPT epoch grow with the data (its own record)",
    )
    p.add_argument("--render-scaling", metavar="JSON", help="rewrite the scaling .md and README section from a record")
    p.add_argument(
        "--render-audit", metavar="JSON", help="rewrite the README's real-data section from a kept audit record"
    )
    p.add_argument("--audit-source", metavar="DIR", help="with --render-audit: audit these images again first")
    p.add_argument("--scaling-one", metavar="PRECISION", help=argparse.SUPPRESS)
    p.add_argument("--one", nargs=2, metavar=("KIND", "PRECISION"), help=argparse.SUPPRESS)
    p.add_argument("--peers-one", nargs="+", metavar="PRECISION", help=argparse.SUPPRESS)
    p.add_argument("--compile-one", action="store_true", help=argparse.SUPPRESS)
    return p


def measure_rounds(configs: list[tuple[str, str, bool]], args) -> dict[str, dict[str, Any]]:
    """Each configuration once per round, in the same order every round; one process each.

    The reported value is the median over rounds; ``rounds`` keeps each round's median step.
    """
    out: dict[str, dict[str, Any]] = {}
    for i in range(args.rounds):
        for kind, prec, compiled in configs:
            key = f"{kind}{'+compile' if compiled else ''}/{prec}"
            print(f"round {i + 1}/{args.rounds}: {key} ...", flush=True)
            res = one_process(kind, prec, args, compile_=compiled)
            if key not in out:
                out[key] = {**res, "rounds": []}
            out[key]["rounds"].append(res["seconds_per_step"])
            for name in ("own_forward", "plain_forward"):
                if f"{name}_seconds" in res:
                    out[key].setdefault(f"{name}_rounds", []).append(res.pop(f"{name}_seconds"))
            out[key]["peak_bytes"] = max(out[key]["peak_bytes"], res["peak_bytes"])
    for v in out.values():
        v["seconds_per_step"] = statistics.median(v["rounds"])
        v["images_per_s"] = args.batch / v["seconds_per_step"]
        v.pop("step_times", None)
        v.pop("own_forward_seconds", None)
        v.pop("plain_forward_seconds", None)
    return out


# The profiles whose cost the bench estimates: the study, and the same study on the whole dataset.
COST_PROFILES = ("full", "kaggle-full")


def study_costs(r: dict[str, Any]) -> list[dict]:
    from vptlib import REPO
    from vptlib.study.profile import load

    return [study_cost(r, load(REPO / "profiles" / f"{name}.yaml")) for name in COST_PROFILES]


def _linear_probe(r: dict[str, Any], batch: int) -> dict[str, float]:
    images = 384  # the study's training split: 480 minus 20% validation
    batches = -(-images // batch)
    fwd = r["results"]["forward/fp32"]["seconds_per_step"]
    head = r["results"]["linear/fp32"]["seconds_per_step"]
    cached, recompute = batches * fwd + 15 * batches * head, 15 * batches * (fwd + head)
    return {
        "images": images,
        "cached_s": cached,
        "recompute_s": recompute,
        "one_pass_s": batches * fwd,
        "cached_over_one_pass": cached / (batches * fwd),
        "recompute_over_one_pass": recompute / (batches * fwd),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render_book:  # make book's own measurement, kept beside the benchmarks and quoted in the README
        from .output import BOOK_TIME_MARKERS, book_time_block, book_time_key, update_readme

        rec = json.loads(Path(args.render_book).read_text())
        kept = Path(args.out) / book_time_key(rec)  # an idle build and one under load, each kept
        atomic.write_json(kept, rec)
        update_readme(REPO / "README.md", book_time_block(Path(args.out), rec), BOOK_TIME_MARKERS)
        print(f"kept {kept}; README updated")
        return 0
    if args.render:  # the verdicts and tables again, from measurements already made
        saved = json.loads(Path(args.render).read_text())
        if not saved["tiny"]:  # the estimates follow the profiles as they are now
            saved.pop("study_cost", None)
            saved["study_costs"] = study_costs(saved)
        return _write(saved, Path(args.render).parent, saved["tiny"])
    if args.render_audit:
        from .audit_record import render

        render(Path(args.render_audit), Path(args.audit_source) if args.audit_source else None)
        return 0
    if args.render_scaling:
        rec = json.loads(Path(args.render_scaling).read_text())
        return _write_scaling(rec, Path(args.render_scaling).parent, rec["tiny"])
    if args.scaling_one:
        print(json.dumps(measure_scaling(args.tiny, args.scaling_one, args.batch, args.device)))
        return 0
    if args.peers_one:
        peers = measure_peers(
            tuple(args.peers_one), args.batch, args.rounds, args.steps, args.warmup, args.tiny, args.device
        )
        print(json.dumps(peers))
        return 0
    if args.one:
        print(
            json.dumps(
                measure(*args.one, args.batch, args.steps, args.warmup, args.tiny, args.device, args.compile_one)
            )
        )
        return 0
    dev = pick_device(args.device)
    size = tiny_clip_config().vision_config.image_size if args.tiny else 224
    r: dict[str, Any] = {
        "machine": machine_name(dev),
        "device": str(dev),
        "batch": args.batch,
        "tiny": args.tiny,
        "torch": torch.__version__,
        "bf16_fast": bf16_supported(dev),
    }
    precisions = ("fp32", "bf16") if r["bf16_fast"] or args.force_bf16 else ("fp32",)
    if precisions == ("fp32",):
        print(
            "no fast bf16 on this device (emulated bf16 is many times slower): measuring fp32 only; "
            "--force-bf16 measures it anyway",
            flush=True,
        )
    if args.scaling_only:  # a record of its own: it needs no other measurement
        return _write_scaling(_scaling(args, precisions, r), Path(args.out), args.tiny)
    if args.peers_only:  # into the result make bench saved for this machine
        saved = Path(args.out) / (r["machine"] + ("-tiny" if args.tiny else "") + ".json")
        if not saved.is_file():
            print(f"no saved result at {saved}: run `make bench` (python -m vptlib.bench) first")
            return 2
        r = {**json.loads(saved.read_text()), **_peers_and_peak(args, precisions)}
        return _write(r, Path(args.out), args.tiny)
    configs = [(kind, prec, False) for kind in ("forward", *METHODS) for prec in precisions]
    if args.compile:
        configs += [(kind, precisions[-1], True) for kind in ("vpt_shallow", "vpt_deep")]
    r["results"] = measure_rounds(configs, args)
    r["linear_probe"] = _linear_probe(r, args.batch)
    r["data_rounds"] = [data_throughput(args.batch, size, args.device) for _ in range(args.rounds)]
    r["data_images_per_s"] = statistics.median(r["data_rounds"])
    r.update(_peers_and_peak(args, precisions))
    _write_scaling(_scaling(args, precisions, r), Path(args.out), args.tiny)
    if not args.tiny:
        r["study_costs"] = study_costs(r)
        for cost in r["study_costs"]:
            print(cost_markdown(cost), flush=True)
    if not args.no_accuracy:
        print("bf16 accuracy check on the smoke profile ...", flush=True)
        r["accuracy_check"] = accuracy_check(args.device)
    return _write(r, Path(args.out), args.tiny)


def _peers_and_peak(args, precisions: tuple[str, ...]) -> dict[str, Any]:
    """This machine's matmul peak per precision, and the peers measured in one process."""
    n = 512 if args.tiny else 4096
    print("matmul peak ...", flush=True)
    peak = {prec: matmul_peak(args.device, prec, n) for prec in precisions}
    print("peers (vptlib, KMnP-style, HF whole-layer) in one process ...", flush=True)
    cmd = ["--peers-one", *precisions, "--rounds", str(args.rounds)]
    return {"peak_flops": peak, "peers": run_json(cmd, args)}


def _scaling(args, precisions: tuple[str, ...], machine: dict[str, Any]) -> dict[str, Any]:
    """prepare, the caches and a VPT epoch at growing sizes, in a fresh process (its memory its own)."""
    print("scaling with the data (phantom sets; the first run generates them once) ...", flush=True)
    measured = run_json(["--scaling-one", precisions[-1]], args)
    return {k: machine[k] for k in ("machine", "device", "torch", "tiny")} | measured


def _write_scaling(rec: dict[str, Any], out: Path, tiny: bool) -> int:
    """``scaling-<machine>.{json,md}`` and, for the real model, the README's section on it."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"scaling-{rec['machine']}{'-tiny' if tiny else ''}"
    atomic.write_json(stem.with_suffix(".json"), rec)
    md = scaling_markdown(rec)
    atomic.write_text(stem.with_suffix(".md"), md)
    print(md)
    print(f"wrote {stem}.json and .md")
    if not tiny and out.resolve() == RESULTS.resolve() and update_readme(GUIDE, md, SCALING_MARKERS):
        print(f"updated the scaling section of {GUIDE.relative_to(REPO)}")
    return 0


def _write(r: dict[str, Any], out: Path, tiny: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (r["machine"] + ("-tiny" if tiny else ""))
    atomic.write_json(stem.with_suffix(".json"), r)
    md = markdown(r)
    atomic.write_text(stem.with_suffix(".md"), md)
    plot(r, stem.with_suffix(".png"))
    print(md)
    print(f"wrote {stem}.json, .md and .png")
    if not tiny and out.resolve() == RESULTS.resolve() and update_readme(GUIDE, md):
        print(f"updated the benchmark section of {GUIDE.relative_to(REPO)}")
    return 0
