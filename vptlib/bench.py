"""``make bench``: what each method costs on this machine, on the real ViT-B/32 architecture.

Random weights are fine for cost. Every configuration runs in its own process so that
peak memory (RSS on the CPU, ``max_memory_allocated`` on CUDA) is its own. Everything
is measured in one run, so the ratios that the targets are stated in are comparable;
absolute numbers vary between machines.

Writes ``benchmarks/results/<machine>.json`` / ``.md`` / ``.png`` and prints each
target as PASS, FAIL or N/A (not applicable on this hardware). It also prints what
``make book`` (full profile) will cost on this machine, estimated from the measured
step times and the profile's epochs, seeds and sweeps, and (unless
``--no-accuracy``) runs the bf16 accuracy check: the smoke profile's methods trained
in fp32 and in bf16 on the tiny model, whose test accuracies must agree within 1
point for bf16 to stay the default where it is fast.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .augment import Augment
from .backbone import byte_level_tokenizer, tiny_clip_config, vit_b32_config
from .dataset import Preprocess, normalize
from .devices import autocast, bf16_supported, pick_device
from .methods import METHODS as REGISTRY

# Methods whose step costs the same as a measured one (WiSE-FT trains like `full`).
SAME_COST = {"zero_shot": "forward", "wise_ft": "full"}
METHODS = tuple(m for m in REGISTRY if m not in SAME_COST)
ADAMW_FULL = ("full", "flyp", "text_ce")  # every weight trains: AdamW's two moments per weight count in memory
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _model(tiny: bool):
    from types import SimpleNamespace

    from transformers import CLIPModel

    torch.manual_seed(0)
    cfg = tiny_clip_config() if tiny else vit_b32_config()
    return SimpleNamespace(model=CLIPModel(cfg).eval(), tokenizer=byte_level_tokenizer()), cfg.vision_config.image_size


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _time(fn, device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(kind: str, precision: str, batch: int, steps: int, warmup: int, tiny: bool, device: str,
            compile_: bool = False) -> dict[str, Any]:  # fmt: skip
    """One configuration, in this process: seconds per step and peak memory."""
    from .methods import build

    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    clip, size = _model(tiny)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.arange(batch, device=dev) % 4
    if kind == "forward":
        vision = clip.model.vision_model.to(dev)

        def step():
            with torch.inference_mode(), autocast(dev, precision):
                vision(pixel_values=x)

    else:
        model = build(kind, clip, 4).to(dev).train()
        del clip
        forward = torch.compile(model) if compile_ else model
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-6) if kind in ADAMW_FULL else torch.optim.SGD(params, lr=1e-6)
        if kind == "linear":  # trains on cached features: the step never sees an image
            feats = torch.randn(batch, model.head.in_features, device=dev)

            def step():
                opt.zero_grad(set_to_none=True)
                model.loss(model.head(feats), y).backward()
                opt.step()

        else:

            def step():
                opt.zero_grad(set_to_none=True)
                with autocast(dev, precision):
                    logits = forward(x)
                model.loss(logits.float(), y).backward()
                opt.step()

    seconds = _time(step, dev, steps, warmup + (2 if compile_ else 0))
    return {"kind": kind + ("+compile" if compile_ else ""), "precision": precision, "seconds_per_step": seconds,
            "images_per_s": batch / seconds, "peak_bytes": _peak_bytes(dev)}  # fmt: skip


def data_throughput(batch: int, size: int, device: str, steps: int = 20) -> float:
    """Images per second of the cached-uint8 pipeline: index, augment, normalise."""
    dev = pick_device(device)
    pixels = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, device=dev)
    aug, prep, gen = Augment(), Preprocess(size, size), torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, len(pixels), (batch,), generator=gen).to(dev)
        normalize(aug(pixels[idx], gen), prep)

    return batch / _time(step, dev, steps, 2)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        desc = torch.cuda.get_device_name(device)
    else:
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1] for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            cpu = platform.processor() or platform.machine()
        desc = f"{cpu.strip()} {torch.get_num_threads()}t"
    return re.sub(r"[^a-z0-9]+", "-", desc.lower()).strip("-")


def _one_process(kind: str, precision: str, args, compile_: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "vptlib.bench", "--one", kind, precision, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]  # fmt: skip
    if args.tiny:
        cmd.append("--tiny")
    if compile_:
        cmd.append("--compile-one")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark {kind}/{precision} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def targets(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/N/A) for each of the stated targets."""
    rows = r["results"]

    def get(kind, prec):
        return rows.get(f"{kind}/{prec}")

    out = []
    fwd32, fwd16 = get("forward", "fp32"), get("forward", "bf16")
    for m in ("vpt_shallow", "vpt_deep"):
        a, b = get(m, "fp32"), get(m, "bf16")
        if b is None:
            out.append((f"{m}: bf16 step >= 1.8x faster than fp32", "not measured", "N/A"))
        else:
            ratio = a["seconds_per_step"] / b["seconds_per_step"]
            ok = "PASS" if ratio >= 1.8 else "FAIL"
            out.append((f"{m}: bf16 step >= 1.8x faster than fp32", f"{ratio:.2f}x", ok if r["bf16_fast"] else "N/A"))
        ratio = a["seconds_per_step"] / fwd32["seconds_per_step"]
        out.append((f"{m}: fp32 step <= 2.3x a no-grad forward", f"{ratio:.2f}x", "PASS" if ratio <= 2.3 else "FAIL"))
        mem = a["peak_bytes"] / get("full", "fp32")["peak_bytes"]
        out.append(
            (f"{m}: peak memory <= 0.8x full fine-tuning (AdamW)", f"{mem:.2f}x", "PASS" if mem <= 0.8 else "FAIL")
        )
    lp = r["linear_probe"]
    out.append(("linear probe, 15 epochs <= 1.2x one extraction pass", f"{lp['cached_over_one_pass']:.2f}x",
                "PASS" if lp["cached_over_one_pass"] <= 1.2 else "FAIL"))  # fmt: skip
    # Against the bf16 forward where bf16 was measured; otherwise against fp32 (a weaker bar).
    fwd = fwd16 or fwd32
    ratio = r["data_images_per_s"] / fwd["images_per_s"]
    label = "bf16" if fwd16 else "fp32 (no bf16 here)"
    out.append(
        (f"data pipeline >= 5x frozen {label} forward images/s", f"{ratio:.1f}x", "PASS" if ratio >= 5 else "FAIL")
    )
    return out


def study_cost(r: dict[str, Any], profile: dict[str, Any], train_images: int = 384, eval_images: int = 416) -> dict:
    """Estimated seconds for ``make book`` with ``profile`` on the measured machine.

    Per run: ``epochs x ceil(train / batch)`` training steps at the measured step time,
    plus one validation pass per epoch and a final pass over every split at the frozen
    forward's speed (the linear probe: one extraction pass, then head steps). Sweeps
    add their points with the training set cut to ``k`` images per class. Data
    preparation, model loading and the book build itself are not included.
    """
    prec = "bf16" if r.get("bf16_fast") and "forward/bf16" in r["results"] else "fp32"
    res, batch = r["results"], r["batch"]
    fwd_img = res[f"forward/{prec}"]["seconds_per_step"] / batch  # seconds per image, no grad

    def one(method: str, epochs: int, n_train: int) -> float:
        kind = SAME_COST.get(method, method)
        steps = epochs * -(-n_train // batch)
        if kind == "forward":
            return (n_train + eval_images) * fwd_img
        if kind == "linear":
            return (n_train + eval_images) * fwd_img + steps * res[f"linear/{prec}"]["seconds_per_step"]
        step = res[f"{kind}/{prec}"]["seconds_per_step"] * (min(n_train, batch) / batch if n_train < batch else 1)
        val = train_images * 0.25  # validation is a quarter of the training split
        return steps * step + epochs * val * fwd_img + (n_train + eval_images) * fwd_img

    rows = []
    seeds = len(profile.get("seeds", [0]))
    for method, hp in profile["hparams"].items():
        epochs = hp.get("epochs", 0)
        n = 1 if method == "zero_shot" else seeds
        rows.append({"what": method, "runs": n, "seconds": n * one(method, epochs, train_images)})
    for name, sw in (profile.get("sweeps") or {}).items():
        total, count = 0.0, 0
        for method in sw["methods"]:
            epochs = {**profile["hparams"].get(method, {}), **sw.get("hparams", {}).get(method, {})}.get("epochs", 0)
            n_seeds = 1 if method == "zero_shot" else len(sw.get("seeds", [0]))
            for k in sw.get("train_per_class", [None]):
                n_train = train_images if k is None else min(train_images, 4 * k)
                for _ in sw.get("prompt_tokens", [None]) if method.startswith("vpt") else [None]:
                    total += n_seeds * one(method, epochs, n_train)
                    count += n_seeds
        rows.append({"what": f"sweep {name}", "runs": count, "seconds": total})
    return {"precision": prec, "rows": rows, "total_seconds": sum(x["seconds"] for x in rows)}


def cost_markdown(cost: dict) -> str:
    lines = [f"Estimated cost of `make book` (full profile) on this machine at {cost['precision']}, from the "
             "measured step times (training and evaluation only):", "", "| part | runs | minutes |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {x['what']} | {x['runs']} | {x['seconds'] / 60:.1f} |" for x in cost["rows"]]
    lines += [f"| **total** | {sum(x['runs'] for x in cost['rows'])} | **{cost['total_seconds'] / 60:.0f}** |"]
    return "\n".join(lines)


def accuracy_check(device: str = "auto", seeds: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """The smoke profile's trained methods in fp32 and bf16: test accuracy, mean over seeds.

    Numerically this is the same check on any hardware (emulated bf16 rounds the same
    way), so it can be run where bf16 is slow. It builds the smoke data and tiny model
    when they are missing.
    """
    from .book import REPO, load_profile, prepare_data
    from .engine import run, run_config
    from .pretrain import pretrain_tiny

    profile = load_profile(REPO / "profiles" / "smoke.yaml")
    if not (Path(profile["model"]) / "model.safetensors").is_file():
        pretrain_tiny(Path(profile["model"]), progress=False)
    if not (Path(profile["data"]) / "manifest.csv").is_file():
        prepare_data(REPO / "profiles" / "smoke.yaml")
    rows = []
    for method in ("linear", "vpt_shallow", "vpt_deep", "vision_lora", "clip_lora", "full"):
        accs = {}
        for prec in ("fp32", "bf16"):
            vals = []
            for seed in seeds:
                cfg = run_config(method, profile["hparams"], data=profile["data"], model=profile["model"],
                                 profile="bench-accuracy", out=profile["runs"], device=device, precision=prec,
                                 batch_size=profile["batch_size"], seed=seed)  # fmt: skip
                vals.append(run(cfg, reuse=True, progress=False).metrics["test"]["accuracy"])
            accs[prec] = 100 * sum(vals) / len(vals)
        diff = accs["bf16"] - accs["fp32"]
        rows.append({"method": method, "fp32": accs["fp32"], "bf16": accs["bf16"], "diff": diff,
                     "ok": abs(diff) <= 1.0})  # fmt: skip
    return {"seeds": list(seeds), "rows": rows, "passed": all(r["ok"] for r in rows)}


def accuracy_markdown(check: dict) -> str:
    lines = [f"bf16 accuracy check (smoke profile, tiny model, test accuracy in %, mean over seeds "
             f"{check['seeds']}; target: within 1 point):", "", "| method | fp32 | bf16 | bf16 - fp32 | result |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {x['method']} | {x['fp32']:.2f} | {x['bf16']:.2f} | {x['diff']:+.2f} | {'PASS' if x['ok'] else 'FAIL'} |"
              for x in check["rows"]]  # fmt: skip
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    lines = [f"Machine: {r['machine']} ({r['device']}); batch {r['batch']}; torch {r['torch']}; "
             f"{'tiny test model' if r['tiny'] else 'ViT-B/32 architecture, random weights'}", "",
             "| configuration | precision | s / step | images / s | peak memory (GB) |", "|---|---|---|---|---|"]  # fmt: skip
    for v in r["results"].values():
        lines.append(f"| {v['kind']} | {v['precision']} | {v['seconds_per_step']:.3f} | {v['images_per_s']:.1f} | "
                     f"{v['peak_bytes'] / 1e9:.2f} |")  # fmt: skip
    lp = r["linear_probe"]
    lines += ["", f"Linear probe, 15 epochs on {lp['images']} training images (derived from the measured step "
              f"times): {lp['cached_s']:.1f} s with the feature cache, {lp['recompute_s']:.1f} s recomputing "
              f"the backbone every epoch.", "",
              f"Data pipeline: {r['data_images_per_s']:.0f} images/s (uint8 cache + augmentation + normalisation).",
              "", "| target | measured | result |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in targets(r)]
    if r.get("accuracy_check"):
        lines += ["", accuracy_markdown(r["accuracy_check"])]
    if r.get("study_cost"):
        lines += ["", cost_markdown(r["study_cost"])]
    if not r["bf16_fast"]:
        lines += ["", "N/A: this device has no fast bf16 (no AVX512-BF16/AMX or CUDA bf16), so the bf16 "
                  "speed target does not apply here, and bf16 was not measured unless --force-bf16."]  # fmt: skip
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(readme: Path, md: str) -> bool:
    """Replace the README's benchmark section (between the markers) with ``md``."""
    text = readme.read_text() if readme.is_file() else ""
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)

    atomic.write_text(readme, f"{head}{README_START}\n{md.rstrip()}\n{README_END}{tail}")
    return True


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["forward", *METHODS]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    measured = [p for p in ("fp32", "bf16") if f"forward/{p}" in r["results"]]
    for i, prec in enumerate(measured):
        vals = [r["results"][f"{k}/{prec}"]["seconds_per_step"] for k in kinds]
        axes[0].bar([j + 0.4 * i for j in range(len(kinds))], vals, width=0.4, label=prec)
        mem = [r["results"][f"{k}/{prec}"]["peak_bytes"] / 1e9 for k in kinds]
        axes[1].bar([j + 0.4 * i for j in range(len(kinds))], mem, width=0.4, label=prec)
    for ax, label in zip(axes, (f"seconds per step (batch {r['batch']})", "peak memory (GB)"), strict=True):
        ax.set_xticks([j + 0.2 for j in range(len(kinds))], kinds, rotation=20)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(r["machine"], fontsize=9)
    fig.tight_layout()
    atomic.atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vptlib.bench", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="the tiny test model instead of ViT-B/32 (for tests)")
    p.add_argument("--force-bf16", action="store_true", help="measure bf16 even where it is only emulated")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    p.add_argument("--compile", action="store_true", help="also measure VPT steps under torch.compile (opt-in)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the bf16 accuracy check (smoke profile)")
    p.add_argument("--one", nargs=2, metavar=("KIND", "PRECISION"), help=argparse.SUPPRESS)
    p.add_argument("--compile-one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.batch, args.steps, args.warmup, args.tiny, args.device,
                                 args.compile_one)))  # fmt: skip
        return 0
    dev = pick_device(args.device)
    size = tiny_clip_config().vision_config.image_size if args.tiny else 224
    r: dict[str, Any] = {"machine": machine_name(dev), "device": str(dev), "batch": args.batch, "tiny": args.tiny,
                         "torch": torch.__version__, "bf16_fast": bf16_supported(dev), "results": {}}  # fmt: skip
    precisions = ("fp32", "bf16") if r["bf16_fast"] or args.force_bf16 else ("fp32",)
    if precisions == ("fp32",):
        print("no fast bf16 on this device (emulated bf16 is many times slower): measuring fp32 only; "
              "--force-bf16 measures it anyway", flush=True)  # fmt: skip
    for kind in ("forward", *METHODS):
        for prec in precisions:
            print(f"measuring {kind} {prec} ...", flush=True)
            r["results"][f"{kind}/{prec}"] = _one_process(kind, prec, args)
    if args.compile:
        for kind in ("vpt_shallow", "vpt_deep"):
            prec = precisions[-1]
            print(f"measuring {kind} {prec} under torch.compile ...", flush=True)
            r["results"][f"{kind}+compile/{prec}"] = _one_process(kind, prec, args, compile_=True)
    images = 384  # the study's training split: 480 minus 20% validation
    batches = -(-images // args.batch)
    fwd = r["results"]["forward/fp32"]["seconds_per_step"]
    head = r["results"]["linear/fp32"]["seconds_per_step"]
    cached = batches * fwd + 15 * batches * head
    recompute = 15 * batches * (fwd + head)
    r["linear_probe"] = {"images": images, "cached_s": cached, "recompute_s": recompute,
                         "one_pass_s": batches * fwd, "cached_over_one_pass": cached / (batches * fwd),
                         "recompute_over_one_pass": recompute / (batches * fwd)}  # fmt: skip
    r["data_images_per_s"] = data_throughput(args.batch, size, args.device)
    r["data_vs_forward"] = "bf16" if "forward/bf16" in r["results"] else "fp32"
    if not args.tiny:
        from .book import REPO, load_profile

        r["study_cost"] = study_cost(r, load_profile(REPO / "profiles" / "full.yaml"))
        print(cost_markdown(r["study_cost"]), flush=True)
    if not args.no_accuracy:
        print("bf16 accuracy check on the smoke profile ...", flush=True)
        r["accuracy_check"] = accuracy_check(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (r["machine"] + ("-tiny" if args.tiny else ""))

    atomic.write_json(stem.with_suffix(".json"), r)
    md = markdown(r)
    atomic.write_text(stem.with_suffix(".md"), md)
    plot(r, stem.with_suffix(".png"))
    print(md)
    print(f"wrote {stem}.json, .md and .png")
    if not args.tiny and out.resolve() == RESULTS.resolve() and update_readme(RESULTS.parents[1] / "README.md", md):
        print("updated the benchmark section of README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
