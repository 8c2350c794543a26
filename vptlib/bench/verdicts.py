"""What the measurements mean: target verdicts that survive noise, the study's estimated
cost on the measured machine, and the bf16 accuracy check.

Every configuration is measured in several interleaved rounds (one process each), so a
burst of load on the machine hits all configurations of a round alike. A ratio target is
computed per round, from configurations measured side by side, and gets a verdict only
when every round agrees: PASS when all rounds meet it, FAIL when none does, and
``noisy: rerun`` otherwise.
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path
from typing import Any

from vptlib.methods import METHODS as REGISTRY
from vptlib.study.audit import KAGGLE_AUDIT
from vptlib.study.profile import Profile, as_profile

from .timing import SAME_COST

NOISY = "noisy: rerun"


def rounds(r: dict[str, Any], key: str) -> list[float]:
    """Seconds per step of ``key`` (``kind/precision``) in each round (one value for a single round)."""
    v = r["results"][key]
    return list(v.get("rounds") or [v["seconds_per_step"]])


def verdict(values: list[float], ok) -> str:
    oks = [bool(ok(v)) for v in values]
    return "PASS" if all(oks) else "FAIL" if not any(oks) else NOISY


def _shown(values: list[float], unit: str = "x", digits: int = 2) -> str:
    mid = f"{statistics.median(values):.{digits}f}{unit}"
    return mid if len(values) == 1 else f"{mid} ({min(values):.{digits}f} to {max(values):.{digits}f})"


def _ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def targets(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured: median and range over rounds, PASS/FAIL/N/A/noisy) for each target."""
    res, out = r["results"], []
    for m in ("vision_lora", "clip_lora"):  # LoRA's frozen weights are cast once too
        if f"{m}/fp32" in res:
            out.append(_bf16_speedup(r, m))
    for m in ("vpt_shallow", "vpt_deep"):
        out.append(_bf16_speedup(r, m))
        for prec in ("fp32", "bf16"):
            # The frozen forward timed in the step's own process where it was (in turn with
            # the step, so load on the machine cancels); else the separate forward process.
            plain = res.get(f"{m}/{prec}", {}).get("plain_forward_rounds")
            if plain or (f"{m}/{prec}" in res and f"forward/{prec}" in res):
                over = _ratio(rounds(r, f"{m}/{prec}"), plain or rounds(r, f"forward/{prec}"))
                out.append(
                    (f"{m}: {prec} step <= 2.3x a no-grad forward", _shown(over), verdict(over, lambda v: v <= 2.3))
                )
            own = r["results"].get(f"{m}/{prec}", {}).get("own_forward_rounds")
            if own:  # the same step against the prompted model's own forward: its extra tokens cancel
                over = _ratio(rounds(r, f"{m}/{prec}"), own)
                out.append(
                    (
                        f"{m}: {prec} step <= 2.3x its own no-grad forward (diagnostic)",
                        _shown(over),
                        verdict(over, lambda v: v <= 2.3),
                    )
                )
        mem = res[f"{m}/fp32"]["peak_bytes"] / res["full/fp32"]["peak_bytes"]
        out.append(
            (f"{m}: peak memory <= 0.8x full fine-tuning (AdamW)", f"{mem:.2f}x", "PASS" if mem <= 0.8 else "FAIL")
        )
    # 15 epochs of head steps on cached features against one extraction pass of the backbone.
    lp = [1 + 15 * h / f for h, f in zip(rounds(r, "linear/fp32"), rounds(r, "forward/fp32"), strict=True)]
    out.append(("linear probe, 15 epochs <= 1.2x one extraction pass", _shown(lp), verdict(lp, lambda v: v <= 1.2)))
    # Against the bf16 forward where bf16 was measured; otherwise against fp32 (a weaker bar).
    fwd = "forward/bf16" if "forward/bf16" in res else "forward/fp32"
    label = "bf16" if fwd.endswith("bf16") else "fp32 (no bf16 here)"
    data = r.get("data_rounds") or [r["data_images_per_s"]]
    per_s = [r["batch"] / s for s in rounds(r, fwd)]
    ratio = [d / f for d, f in zip(data, per_s, strict=True)] if len(data) == len(per_s) else [data[0] / per_s[0]]
    out.append(
        (
            f"data pipeline >= 5x frozen {label} forward images/s",
            _shown(ratio, digits=1),
            verdict(ratio, lambda v: v >= 5),
        )
    )
    return out + peer_targets(r)


def peer_targets(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """vptlib's VPT step against the KMnP-style port's, round by round in one process."""
    from .peers import TARGET

    out = []
    for key, peers in (r.get("peers") or {}).items():
        ours = _ratio(peers["vptlib"]["rounds"], peers["kmnp"]["rounds"])
        kind, prec = key.split("/")
        name = f"{kind}: {prec} step <= {TARGET}x the KMnP-style step"
        out.append((name, _shown(ours), verdict(ours, lambda v: v <= TARGET)))
    return out


def _bf16_speedup(r: dict[str, Any], m: str) -> tuple[str, str, str]:
    name = f"{m}: bf16 step >= 1.8x faster than fp32"
    if f"{m}/bf16" not in r["results"]:
        return name, "not measured", "N/A"
    speedup = _ratio(rounds(r, f"{m}/fp32"), rounds(r, f"{m}/bf16"))
    return name, _shown(speedup), verdict(speedup, lambda v: v >= 1.8) if r["bf16_fast"] else "N/A"


def grid_runs(profile: Profile, method: str) -> int:
    """Runs of ``method`` in the book: its grid on the tuning seed, then every reported seed afresh."""
    from vptlib.study.tuning import grid_points

    seeds = len(profile.seeds) if REGISTRY[method].uses_seed(profile.run_config(method).options) else 1
    return len(grid_points(profile, method)) + seeds


# The Kaggle dataset's Training/ and Testing/ folders (a pooled draw, per_class all, takes one
# image per copy cluster: its sizes come from the kept audit, KAGGLE_AUDIT).
KAGGLE_IMAGES = {"train": 5712, "test": 1311}


def split_sizes(profile: Profile | dict[str, Any]) -> tuple[int, int, int]:
    """(train, validation, test) images that ``profile``'s ``source.prepare`` asks for."""
    from vptlib.data.classes import CLASSES
    from vptlib.data.prepare import PrepareOptions

    profile = as_profile(profile)
    keys = ("train_per_class", "test_per_class", "val_fraction", "test_fraction")
    prep = {**{k: getattr(PrepareOptions, k) for k in keys}, **profile.source.get("prepare", {})}
    if prep["test_per_class"] in (None, "all"):
        return pooled_sizes(float(prep["val_fraction"]), float(prep["test_fraction"]))

    def images(key: str, split: str) -> int:
        k = prep[key]
        return KAGGLE_IMAGES[split] if k in (None, "all") else len(CLASSES) * int(k)

    pool = images("train_per_class", "train")
    val = round(pool * float(prep["val_fraction"]))
    return pool - val, val, images("test_per_class", "test")


def pooled_sizes(
    val_fraction: float, test_fraction: float, clusters: dict[str, int] | None = None
) -> tuple[int, int, int]:
    """(train, validation, test) of the pooled draw on the Kaggle images (``clusters`` per class,
    by default the audited ones): one image per copy cluster, split by cluster and class as
    :mod:`vptlib.data.draw` does."""
    import json

    from vptlib.data.draw import pooled_test_counts

    record = json.loads(KAGGLE_AUDIT.read_text())
    drawn = record.get("kaggle_full_split") or {}
    same = {"val_fraction": val_fraction, "test_fraction": test_fraction}.items() <= drawn.get("settings", {}).items()
    if clusters is None and same:
        return drawn["train"], drawn["val"], drawn["test"]  # what prepare drew on the real images
    clusters = clusters or record["clusters"]["by_class"]
    tests = pooled_test_counts(clusters, test_fraction)
    val = {c: round((k - tests[c]) * val_fraction) for c, k in clusters.items()}
    return sum(clusters[c] - tests[c] - val[c] for c in clusters), sum(val.values()), sum(tests.values())


def study_cost(r: dict[str, Any], profile: Profile | dict[str, Any]) -> dict:
    """Estimated seconds for ``make book`` with ``profile`` on the measured machine.

    Per run: ``epochs x ceil(train / batch)`` training steps at the measured step time,
    plus one validation pass per epoch and a final pass over every split at the frozen
    forward's speed (the linear probe: one extraction pass, then head steps). The split
    sizes come from the profile's ``source.prepare`` (:func:`split_sizes`). Tuning grids
    add their points (one seed each); sweeps add their points with the training set cut to
    ``k`` images per class and, under ``epoch_steps="full-split"``, the main run's step count;
    each backbone and protocol variant adds its methods' runs (:mod:`vptlib.study.variants`).
    Data preparation, model loading and the book build are not included.
    """
    from vptlib.data.classes import CLASSES

    profile = as_profile(profile)
    train_images, val_images, test_images = split_sizes(profile)
    eval_images = val_images + test_images
    prec = "bf16" if r.get("bf16_fast") and "forward/bf16" in r["results"] else "fp32"
    res, batch = r["results"], r["batch"]
    fwd_img = res[f"forward/{prec}"]["seconds_per_step"] / batch  # seconds per image, no grad

    def one(method: str, epochs: int, n_train: int, steps_over: int | None = None) -> float:
        kind = SAME_COST.get(method, method)
        steps = epochs * -(-(steps_over or n_train) // batch)
        if kind == "forward":
            return (n_train + eval_images) * fwd_img
        cache = _feature_cache_of(kind)
        if cache is not None:  # one extraction pass (and V of the augmented views), then head steps
            views, covers = cache
            steps *= views if covers else 1
            extract = n_train * (1 + views) + eval_images
            return extract * fwd_img + steps * res[f"{kind}/{prec}"]["seconds_per_step"]
        step = res[f"{kind}/{prec}"]["seconds_per_step"] * (
            min(n_train, batch) / batch if n_train < batch and not steps_over else 1
        )
        return steps * step + epochs * val_images * fwd_img + (n_train + eval_images) * fwd_img

    rows = []
    for method in profile.hparams:
        n = grid_runs(profile, method)
        cfg = profile.run_config(method).resolved()
        rows.append({"what": method, "runs": n, "seconds": n * one(method, cfg.epochs, train_images)})
    from vptlib.study.sweep import grid

    for name in profile.sweeps:
        total = 0.0
        points = grid(profile, name, check=False)  # the data folder need not exist to estimate
        for axes, cfg in points:
            k = axes.get("train_per_class")
            n = train_images if k is None else min(train_images, len(CLASSES) * k)
            total += one(cfg.method, cfg.epochs, n, train_images if cfg.epoch_steps == "full-split" else None)
        rows.append({"what": f"sweep {name}", "runs": len(points), "seconds": total})
    from vptlib.study.variants import variants

    for v in variants(profile):  # another backbone of the same architecture costs the same per step
        counts = {m: grid_runs(v.profile, m) for m in v.methods}
        seconds = sum(n * one(m, v.profile.run_config(m).resolved().epochs, train_images) for m, n in counts.items())
        rows.append({"what": f"{v.kind} {v.name}", "runs": sum(counts.values()), "seconds": seconds})
    return {
        "profile": profile.profile,
        "images": [train_images, val_images, test_images],
        "precision": prec,
        "rows": rows,
        "total_seconds": sum(x["seconds"] for x in rows),
    }


@functools.cache
def _feature_cache_of(method: str) -> tuple[int, bool] | None:
    """(augmented views, whether an epoch covers them) of a method that trains on cached
    features, None for one that trains on images; read from the method built on the tiny CLIP."""
    from types import SimpleNamespace

    from transformers import CLIPModel

    from vptlib.methods import build
    from vptlib.models.offline import byte_level_tokenizer, tiny_clip_config

    clip = SimpleNamespace(model=CLIPModel(tiny_clip_config()), tokenizer=byte_level_tokenizer())
    model = build(method, clip, 4)
    return (model.feature_views, model.epoch_draws_views) if model.uses_feature_cache else None


def accuracy_check(device: str = "auto", seeds: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """The smoke profile's trained methods in fp32 and bf16: test accuracy, mean over seeds.

    Numerically this is the same check on any hardware (emulated bf16 rounds the same
    way), so it can be run where bf16 is slow. It builds the smoke data and tiny model
    when they are missing. The tolerance is 1 point or the effect of one test image per
    seed, whichever is larger: with the smoke profile's 80 test images one image is 1.25
    points, so a 1-point bar alone would fail on a single changed prediction.
    """
    from vptlib import REPO
    from vptlib.runs.engine import run
    from vptlib.study.book import prepare_data
    from vptlib.study.pretrain import pretrain_tiny
    from vptlib.study.profile import load

    path = REPO / "profiles" / "smoke.yaml"
    profile = load(path)
    if not (Path(profile.model) / "model.safetensors").is_file():
        pretrain_tiny(Path(profile.model), progress=False)
    if not (Path(profile.data) / "manifest.csv").is_file():
        prepare_data(path)
    rows = []
    for method in ("linear", "vpt_shallow", "vpt_deep", "vision_lora", "clip_lora", "full"):
        accs, n_test = {}, 0
        for prec in ("fp32", "bf16"):
            vals = []
            for seed in seeds:
                cfg = profile.run_config(method, profile="bench-accuracy", device=device, precision=prec, seed=seed)
                test = run(cfg, reuse=True, progress=False).metrics["test"]
                vals.append(test["accuracy"])
                n_test = test["n"]
            accs[prec] = 100 * sum(vals) / len(vals)
        diff = accs["bf16"] - accs["fp32"]
        tolerance = max(1.0, 100 / n_test) if n_test else 1.0
        rows.append(
            {
                "method": method,
                "fp32": accs["fp32"],
                "bf16": accs["bf16"],
                "diff": diff,
                "tolerance": tolerance,
                "ok": abs(diff) <= tolerance + 1e-9,
            }
        )
    return {"seeds": list(seeds), "rows": rows, "passed": all(r["ok"] for r in rows)}
