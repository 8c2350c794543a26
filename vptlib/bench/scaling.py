"""How the work grows with the data set: prepare, the pixel and feature caches, one VPT epoch.

A user of the kaggle-full profile (7,023 images) should know its cost before running
it. At each size a phantom source of 512-pixel JPEGs (the Kaggle images' size) is
prepared whole (``train_per_class=all``) and then used as a run uses it, on the ViT-B/32
architecture with random weights: the uint8 pixel cache decoded, the linear probe's
features of every split computed, and one VPT-shallow epoch trained and evaluated. Each
stage's growth is its exponent k in t ~ n^k between the smallest and largest size; n log
n over that range is k = 1.13, and the pairwise duplicate search is n^2 by design
(:mod:`vptlib.data.copies`), bounded instead by its share of prepare.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vptlib import REPO
from vptlib.atomic import atomic_dir
from vptlib.data.classes import CLASSES
from vptlib.data.phantoms import phantom

# Phantoms per class and split (4 classes x Training/Testing): 800 images, this study's
# 480 + 320; 2,400; and 7,024, the whole Kaggle set's 7,023 rounded up to a whole class.
SIZES = (100, 300, 878)
TINY_SIZES = (4, 12)  # --tiny: the test model on 32 and 96 images
PIXELS, TINY_PIXELS = 512, 96
# Drawn at this side and resized: the generator takes 0.14 s an image at 512 pixels, and
# decoding and hashing (what is measured) depend on the JPEG's size, not on how it was drawn.
DRAWN = 128
SLACK = 0.15  # exponent above n log n's that one round's timing noise may add
DUP_SHARE = 0.10  # the pairwise search's largest share of prepare at the largest size
GENERATOR = "v1"  # bump when source() changes: the cached sources are keyed on it
# The feature cache is timed as a linear-probe run with an SGD head for one epoch: every
# split through the backbone (cold), plus loading the model and the warm pixel cache and
# one cheap head epoch. Not the L-BFGS probe's search over 96 values of C: its iterations
# depend on the features, and random weights make the phantoms nearly separable once the
# training split nears the feature width (768), so every fit runs to max_iter (measured:
# 30 s at 320 training images, 616 s at 960); only real weights can tell its cost.
LINEAR = {"solver": "sgd"}
STAGES_RUN = ("pixel cache (decode to uint8)", "feature cache (cold) + one head epoch", "one VPT-shallow epoch")
EVAL = "VPT-shallow evaluation (validation and test)"
DUP = "duplicate search"


def source(per_class: int, pixels: int, seed: int = 0) -> Path:
    """A Kaggle-layout phantom source, made once and kept under ``build/bench-scaling/``."""
    folder = REPO / "build" / "bench-scaling" / f"phantoms-{per_class}-{pixels}-{seed}-{GENERATOR}"
    if folder.is_dir():
        return folder
    with atomic_dir(folder) as tmp:  # a killed generation leaves nothing to mistake for a source
        for s, split in enumerate(("Training", "Testing")):
            for c, label in enumerate(CLASSES):
                (tmp / split / label).mkdir(parents=True)
                for i in range(per_class):
                    rng = np.random.default_rng([seed, s, c, i, 7])
                    small = Image.fromarray(phantom(label, rng, DRAWN))
                    big = np.asarray(small.resize((pixels, pixels), Image.Resampling.BICUBIC), dtype=np.float32)
                    grain = rng.normal(0, 3, big.shape)  # scanner noise: JPEGs of realistic size
                    arr = np.clip(big + grain, 0, 255).astype(np.uint8)
                    Image.fromarray(arr).convert("RGB").save(tmp / split / label / f"{s}-{c}-{i:05d}.jpg", quality=92)
    return folder


def _model(work: Path, tiny: bool) -> tuple[Path, int]:
    """A random-weight model folder, as ``--model`` takes it, and its input side."""
    import torch
    from transformers import CLIPModel

    from vptlib.models.offline import save_clip, tiny_clip_config, vit_b32_config

    torch.manual_seed(0)
    cfg = tiny_clip_config() if tiny else vit_b32_config()
    return save_clip(CLIPModel(cfg).eval(), work / "model"), cfg.vision_config.image_size


def measure_size(
    per_class: int, pixels: int, model: Path, side: int, work: Path, precision: str, batch: int, device: str
) -> dict[str, Any]:
    """Seconds of every stage at one size, on a fresh prepared set; ``side``: the model's input."""
    from vptlib.data.dataset import Preprocess, load_data
    from vptlib.data.prepare import PrepareOptions, prepare
    from vptlib.runs.engine import run

    out = work / f"set-{per_class}"
    res = prepare(PrepareOptions(source(per_class, pixels), out, train_per_class="all", test_per_class="all"))
    times = dict(res.seconds)
    t0 = time.perf_counter()
    load_data(out, Preprocess(side, side), progress=False)
    times[STAGES_RUN[0]] = time.perf_counter() - t0
    common = dict(data=str(out), model=str(model), out=str(work / "runs"), profile=f"scaling-{per_class}")
    common.update(device=device, precision=precision, batch_size=batch, seed=0)
    linear = run(method="linear", epochs=1, options=LINEAR, progress=False, **common).metrics
    times[STAGES_RUN[1]] = linear["seconds"]["total"]
    vpt = run(method="vpt_shallow", epochs=1, progress=False, **common).metrics
    times[STAGES_RUN[2]] = vpt["seconds_per_epoch"]
    times[EVAL] = vpt["seconds"]["evaluation"]
    return {"images": res.chosen, "seconds": times}


def measure_scaling(tiny: bool, precision: str, batch: int, device: str) -> dict[str, Any]:
    """Every stage at every size, smallest first."""
    sizes, pixels = (TINY_SIZES, TINY_PIXELS) if tiny else (SIZES, PIXELS)
    with tempfile.TemporaryDirectory(prefix="vptlib-scaling-") as tmp:
        work = Path(tmp) / ("tiny" if tiny else "vit")
        work.mkdir()
        model, side = _model(work, tiny)
        rows = []
        for per_class in sizes:
            print(f"scaling: {8 * per_class} images ...", flush=True)
            rows.append(measure_size(per_class, pixels, model, side, work, precision, batch, device))
    return {"pixels": pixels, "precision": precision, "batch": batch, "sizes": rows}


def _stages(s: dict[str, Any]) -> list[str]:
    """The stages in the order the work runs (a saved record's keys come back sorted)."""
    from vptlib.data.prepare import STAGES

    order = [*STAGES, *STAGES_RUN, EVAL]
    seen = s["sizes"][0]["seconds"]
    return [x for x in order if x in seen] + sorted(set(seen) - set(order))


def exponent(n: list[int], t: list[float]) -> float:
    """k in t ~ n^k between the first and last size."""
    return math.log(max(t[-1], 1e-9) / max(t[0], 1e-9)) / math.log(n[-1] / n[0])


def n_log_n(n: list[int]) -> float:
    return math.log(n[-1] * math.log(n[-1]) / (n[0] * math.log(n[0]))) / math.log(n[-1] / n[0])


def targets(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    n = [x["images"] for x in s["sizes"]]
    bound = n_log_n(n) + SLACK
    out = []
    for stage in _stages(s):
        t = [x["seconds"][stage] for x in s["sizes"]]
        k = exponent(n, t)
        if stage == DUP:
            last = s["sizes"][-1]["seconds"]
            share = last[DUP] / sum(v for key, v in last.items() if key in ("read and hash", DUP, "write"))
            name = f"{DUP} (all pairs, n^2 by design): <= {DUP_SHARE:.0%} of prepare at {n[-1]:,} images"
            out.append((name, f"{share:.1%} (k = {k:.2f})", "PASS" if share <= DUP_SHARE else "FAIL"))
        else:
            name = f"{stage}: grows no faster than n log n (k <= {bound:.2f}, {n[0]:,} to {n[-1]:,} images)"
            out.append((name, f"k = {k:.2f}", "PASS" if k <= bound else "FAIL"))
    return out


def markdown(s: dict[str, Any]) -> str:
    """The scaling record as the README shows it: the machine, a row per stage, the verdicts."""
    n = [x["images"] for x in s["sizes"]]
    lines = [
        f"Machine: {s['machine']} ({s['device']}); torch {s['torch']}; phantom sets of {s['pixels']}-pixel "
        f"JPEGs prepared whole, then a linear probe's feature cache and one VPT-shallow epoch on the "
        f"{'tiny test model' if s.get('tiny') else 'ViT-B/32 architecture, random weights'} "
        f"({s['precision']}, batch {s['batch']}); k is the exponent in t ~ n^k from the smallest to the "
        "largest set, one round each.",
        "",
        "| stage | " + " | ".join(f"{x:,} images (s)" for x in n) + " | k |",
        "|---|" + "---|" * (len(n) + 1),
    ]
    for stage in _stages(s):
        t = [x["seconds"][stage] for x in s["sizes"]]
        lines.append(f"| {stage} | " + " | ".join(f"{v:.2f}" for v in t) + f" | {exponent(n, t):.2f} |")
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in targets(s)]
    return "\n".join(lines) + "\n"
