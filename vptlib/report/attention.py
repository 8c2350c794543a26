"""The Attention page: where each method's CLS token looks (maps computed by :mod:`vptlib.models.attention`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from vptlib.data.classes import DISPLAY_NAMES
from vptlib.data.dataset import Preprocess, load_data, normalize
from vptlib.models.attention import cls_attention
from vptlib.models.backbone import load_clip
from vptlib.runs import records
from vptlib.runs.records import load_run

from . import style
from .loading import TITLES, latest_runs

CMAP = "inferno"  # attention over the grey image, with its colour bar

ATTENTION_METHODS = ("linear", "vpt_shallow", "vpt_deep", "full")


def attention_maps(
    runs: str | Path, profile: str, data_root: str | Path, methods=ATTENTION_METHODS, per_class: int = 2
) -> dict:
    """Last-layer CLS attention of each method's first-seed run on the same test images."""
    found = {m: d for m, d in latest_runs(runs, profile).items() if m in methods}
    return maps_for_runs(found, data_root, per_class)


def _attention_inputs(data_root: str | Path, run_dir: Path, per_class: int):
    cfg = records.read_run(run_dir)["config"]
    clip = load_clip(cfg["model"], revision=cfg.get("revision"))
    data = load_data(data_root, Preprocess.from_processor(clip.processor))
    labels = data.test.labels
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(len(data.classes))])
    return clip, data, idx, normalize(data.test.pixels[idx], data.prep)


def maps_for_runs(found: dict[str, Path], data_root: str | Path, per_class: int = 2) -> dict:
    """Last-layer CLS attention of each run in ``found`` (method -> run dir) on the same test images.

    The first ``per_class`` test images of each class; ``prompts`` holds the share of CLS
    attention that goes to prompt tokens, per layer.
    """
    if not found:
        return {}
    clip, data, idx, x = _attention_inputs(data_root, next(iter(found.values())), per_class)
    out = {
        "images": data.test.pixels[idx],
        "labels": [data.classes[int(i)] for i in data.test.labels[idx]],
        "paths": [data.test.paths[int(i)] for i in idx],
        "maps": {},
        "prompts": {},
    }
    for method, run_dir in found.items():
        model, _ = load_run(run_dir, clip=clip)
        att = cls_attention(model, x)
        out["maps"][method] = att.to_patches[-1]
        out["prompts"][method] = att.to_prompts  # (layers, images)
    return out


def plot_attention(maps: dict):
    """Each test image with each method's last-layer CLS-to-patch attention overlaid."""
    if not maps:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.text(0.5, 0.5, "no finished runs of these methods", ha="center")
        ax.set_axis_off()
        return fig
    methods = list(maps["maps"])
    n = len(maps["labels"])
    cols = 1 + len(methods)
    side = style.COLUMN_INCHES / (cols + 0.4)  # the column's width, with room for the colour bar
    fig, axes = plt.subplots(
        n, cols, figsize=(style.COLUMN_INCHES, side * n + 0.6), squeeze=False, layout="constrained"
    )
    for i in range(n):
        img = maps["images"][i].float().mean(0).numpy()
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 0].set_ylabel(DISPLAY_NAMES.get(maps["labels"][i], maps["labels"][i]), fontsize=9)
        for j, m in enumerate(methods, start=1):
            a = maps["maps"][m][i]
            axes[i, j].imshow(img, cmap="gray")
            axes[i, j].imshow(
                a / a.max(),
                cmap=CMAP,
                vmin=0,
                vmax=1,
                alpha=0.55,
                extent=(0, img.shape[1], img.shape[0], 0),
                interpolation="bilinear",
            )
    for j, title in enumerate(["image", *[TITLES[m] for m in methods]]):
        axes[0, j].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=CMAP)
    fig.colorbar(bar, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="attention / image's maximum")
    return fig


def plot_prompt_attention(maps: dict):
    """Share of the CLS token's attention that goes to the prompt tokens, per layer (VPT)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m, share in (maps.get("prompts") or {}).items():
        if np.asarray(share).max() > 0:
            mean, std = np.asarray(share).mean(1), np.asarray(share).std(1)
            layers = np.arange(1, len(mean) + 1)
            low = np.minimum(std, mean)  # a share is never below 0%: the bar stops there
            ax.errorbar(
                layers,
                100 * mean,
                yerr=[100 * low, 100 * std],
                marker="o",
                capsize=3,
                label=TITLES[m],
                color=style.color(m),
            )
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole layers, never 2.5
    ax.set_ylabel("CLS attention to prompts (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return fig
