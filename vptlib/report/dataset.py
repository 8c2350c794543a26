"""The Dataset page: samples, class balance, sizes and the shape shortcut, duplicates, skipped files."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from vptlib.data.classes import DISPLAY_NAMES

from . import style
from .loading import manifest


def sample_grid(data_root: str | Path, per_class: int = 4, seed: int = 0):
    df = manifest(data_root)
    classes = list(dict.fromkeys(df["class"]))
    side = min(2.0, style.COLUMN_INCHES / per_class)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(side * per_class, 1.05 * side * len(classes)), squeeze=False
    )
    for i, c in enumerate(classes):
        rows = df[(df["class"] == c) & (df.split == "train")].sample(per_class, random_state=seed)
        for j, (_, r) in enumerate(rows.iterrows()):
            ax = axes[i, j]
            ax.imshow(Image.open(Path(data_root) / r.path).convert("L"), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(DISPLAY_NAMES.get(c, c))
    fig.tight_layout()
    return fig


def class_distribution(data_root: str | Path):
    df = manifest(data_root)
    counts = df[df.excluded == ""].groupby(["label", "split"]).size().unstack(fill_value=0)
    counts = counts[[s for s in ("train", "val", "test") if s in counts.columns]]
    ax = counts.plot.bar(figsize=(7, 3.2), rot=0)
    ax.set_ylabel("images")
    ax.set_xlabel("")
    ax.set_title("images per class and split")
    # The legend beside the bars, never over them (the classes' bars fill the axes' width).
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.figure.tight_layout()
    return ax.figure


def size_table(data_root: str | Path) -> pd.DataFrame:
    df = manifest(data_root)
    g = df.groupby("label")
    return pd.DataFrame(
        {
            "images": g.size(),
            "median width": g.width.median(),
            "median height": g.height.median(),
            "share square": g.aspect.apply(lambda a: float(np.mean(np.isclose(a, 1.0, atol=0.02)))).round(3),
            "aspect min": g.aspect.min().round(3),
            "aspect max": g.aspect.max().round(3),
        }
    )


def plot_sizes(data_root: str | Path):
    """Image size and aspect-ratio distributions per class: the shape shortcut, made visible."""
    df = manifest(data_root)
    fig, axes = plt.subplots(1, 2, figsize=(style.COLUMN_INCHES, 3.2))
    for label, g in df.groupby("label"):
        axes[0].scatter(g.width, g.height, s=10, alpha=0.6, label=label)
        axes[1].hist(g.aspect, bins=20, alpha=0.5, label=label)
    axes[0].set_xlabel("width (px)")
    axes[0].set_ylabel("height (px)")
    axes[1].set_xlabel("aspect ratio (width / height)")
    axes[1].set_ylabel("images")
    axes[1].legend()
    fig.tight_layout()
    return fig


def duplicates_table(data_root: str | Path) -> pd.DataFrame:
    path = Path(data_root) / "duplicates.csv"
    d = pd.read_csv(path, dtype=str) if path.is_file() else pd.DataFrame()
    if d.empty:
        return pd.DataFrame({"finding": ["no copies among the chosen images, and none skipped"]})
    d["where"] = np.where(d.a_split == d.b_split, "within " + d.a_split, d.a_split + " / " + d.b_split)
    return d.groupby(["kind", "where"]).size().rename("pairs").reset_index()


def skipped_table(data_root: str | Path) -> pd.DataFrame:
    df = pd.read_csv(Path(data_root) / "manifest.csv", dtype=str, keep_default_na=False)
    s = df[df.split == "skipped"]
    if s.empty:
        return pd.DataFrame({"finding": ["no file was skipped"]})
    return s[["source", "note"]].rename(columns={"note": "reason"})


def shape_floor_markdown(data_root: str | Path) -> str:
    from vptlib.study.shortcuts import shape_floor

    r = shape_floor(manifest(data_root))
    return (
        f"A classifier that sees only each image's original width, height and aspect ratio "
        f"(gradient-boosted trees, trained on train + validation) reaches **{100 * r['accuracy']:.1f}%** test "
        f"accuracy (95% CI {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}%, {r['test_images']} images); "
        f"always answering the most common class gives {100 * r['majority_rate']:.1f}%. A model that does "
        f"not clearly beat the first number may be reading image shape rather than anatomy."
    )


def low_level_floor_markdown(data_root: str | Path) -> str:
    from vptlib.study.shortcuts import FILE_FEATURES, INTENSITY_FEATURES, low_level_floors

    floors = low_level_floors(data_root, manifest(data_root))

    def said(r: dict[str, float]) -> str:
        return f"**{100 * r['accuracy']:.1f}%** (95% CI {100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}%)"

    file, both = floors["file"], floors["file + intensity"]
    return (
        f"A classifier that sees only each file's {', '.join(FILE_FEATURES[:-1])} and {FILE_FEATURES[-1]} "
        f"(gradient-boosted trees, trained on train + validation) reaches {said(file)} test accuracy on "
        f"{file['test_images']} images; given also {' and the '.join(INTENSITY_FEATURES)} it reaches {said(both)}. "
        f"The most common class gives {100 * file['majority_rate']:.1f}%. A high first number means the classes "
        f"differ in how their files were made (source, export, compression), which a model can learn without "
        f"reading anatomy; the second also counts what the grey levels say, anatomy included, so it bounds the "
        f"intensity shortcut from above."
    )


def origin_markdown(data_root: str | Path) -> str:
    """Where the prepared images came from: the fetched dataset's version, file counts and
    file-list hash (``source.json`` of ``vptlib data fetch``, kept in the prepared set)."""
    from vptlib.data.sets import set_info

    info = set_info(data_root) or {}
    origin = info.get("origin")
    if not origin:
        return (
            f"Source folder `{info.get('source', '?')}`: not fetched by `vptlib data fetch` (synthetic "
            f"phantoms, or a folder copied by hand), so no dataset version or file-list hash is recorded."
        )
    files = ", ".join(f"{split} {n:,}" for split, n in (origin.get("files") or {}).items())
    version = origin.get("version")
    return (
        f"Dataset `{origin.get('handle')}`"
        + (f" (version {version})" if version else "")
        + f": {files} files; sha256 of the file list (every path, size and byte) "
        f"`{origin.get('file_list_sha256')}`."
    )


# What the Kaggle data are known for, said on the Dataset page; a build on phantoms says what
# its own images are first and keeps these as what real images need checking for.
KAGGLE_SHAPES = (
    "In the Kaggle dataset the no-tumour images are known to have more varied aspect ratios than the tumour "
    "images, which a model can learn instead of anatomy."
)
KAGGLE_FILES = (
    "The Kaggle \u201cno tumor\u201d images come from another source dataset than the tumour images, so the "
    "classes may differ in how their files were made as well as in what they show."
)


def _said_of(data_root: str | Path, kaggle: str, real: str, phantoms: str) -> str:
    """``kaggle`` and then ``real`` for a set drawn from real images; ``phantoms`` first, with
    ``kaggle`` as what real images need, for a set drawn from phantoms."""
    from vptlib.data.phantoms import synthetic

    return f"{phantoms} (On real data: {kaggle})" if synthetic(data_root) else f"{kaggle} {real}"


def shape_context_markdown(data_root: str | Path) -> str:
    """Why the Dataset page looks at shapes, said of this build's images (phantoms or the Kaggle data)."""
    return _said_of(
        data_root,
        KAGGLE_SHAPES,
        "These plots show whether this subset has that shortcut.",
        "These images are synthetic phantoms, all drawn at one size (`vptlib.data.phantoms`), so no class can "
        "differ in shape: the plots show the check that real images need.",
    )


def files_context_markdown(data_root: str | Path) -> str:
    """Why the page measures file and intensity statistics, said of this build's images."""
    return _said_of(
        data_root,
        KAGGLE_FILES,
        "",
        "These phantoms are written by one program for every class, so their files differ only in what they "
        "draw: a floor here tests the check itself.",
    ).strip()


def copy_rule_markdown() -> str:
    """The copy rule in words, from :mod:`vptlib.data.copies`'s constants."""
    from vptlib.data import copies as c

    return (
        f"Two images are **copies** when they have the same bytes (*exact*); when their {c.THUMB}×{c.THUMB} grey "
        f"thumbnails, mean-centred, have a cosine of at least {c.SIMILAR} as they are (*near*) or with one "
        f"flipped left to right (*mirrored*), which ignores any change of brightness and contrast; when the "
        f"thumbnails after histogram equalisation reach {c.EQUALISED} (*re-windowed*: another window or gamma; "
        f"a near copy whose grey levels differ by more than {c.REWINDOW_GREY:g} of 255 on average is called "
        f"re-windowed too); or, for pairs at {c.CANDIDATE} or more, when a shift of up to one thumbnail pixel "
        f"or a {c.CROP:.0%} centre crop lifts the cosine to {c.ALIGNED} (*shifted*). Copies are grouped into "
        f"clusters (copies of copies), and `vptlib data prepare` draws every split by cluster, one image per "
        f"cluster: no image has a copy in another split, by this rule."
    )


def copy_rule_precision_markdown() -> str:
    """The rule measured on the 7,019 real Kaggle images, from the audit record the repo keeps
    (``benchmarks/results/audit-kaggle-brain-mri-224.json``, made by ``vptlib data audit``)."""
    import json

    from vptlib.study.audit import KAGGLE_AUDIT

    if not KAGGLE_AUDIT.is_file():
        return "No audit record of the real images is kept with this copy of the code."
    r = json.loads(KAGGLE_AUDIT.read_text())
    p, o = r.get("precision"), r["official_test"]
    tests = sum(v["test_images"] for v in o.values())
    copied = sum(v["with_copy_not_only_shifted"] for v in o.values())
    text = (
        f"On the {r['images']:,} real Kaggle images (the 224-pixel copy), the rule finds "
        f"{sum(r['pairs_by_kind'].values()):,} copy pairs in {r['clusters']['count']:,} clusters, and "
        f"{copied:,} of the {tests:,} images of the official Testing folder have a copy in its Training folder."
    )
    if p:
        text += (
            f" Its precision, by an independent check (64-pixel thumbnails made apart from the rule's code, "
            f"mean-centred cosine, mirror allowed) on {p['checked']:,} of its pairs: "
            f"{100 * p['share_at_least_0.9']:.1f}% at 0.9 or more and {100 * p['share_at_least_0.95']:.1f}% at 0.95 "
            f"or more (lowest {p['lowest']:.3f}); every pair at 0.95 or more by that check is a copy by the rule."
        )
    return text


def official_split_table(data_root: str | Path) -> pd.DataFrame:
    """The source's own split measured (``vptlib data audit`` on the folder the set was prepared
    from): per class, its Testing images and how many have a copy in its Training folder, by kind."""
    from vptlib.data.copies import KINDS
    from vptlib.data.sets import set_info
    from vptlib.study.audit import audit

    source = Path((set_info(data_root) or {}).get("source", ""))
    if not source.is_dir() or not (set_info(data_root) or {}).get("source"):
        return pd.DataFrame({"finding": [f"the source folder {source} is not here to audit"]})
    official = audit(source)["official_test"]
    rows = []
    for cls, o in official.items():
        if not o["test_images"]:
            continue
        row = {"class": DISPLAY_NAMES.get(cls, cls), "Testing images": o["test_images"]}
        row["with a copy in Training"] = o["with_copy_in_training"]
        row["share (%)"] = round(100 * o["with_copy_in_training"] / o["test_images"], 1)
        row |= {k: o["by_kind"].get(k, 0) for k in KINDS}
        rows.append(row)
    if not rows:
        return pd.DataFrame({"finding": ["the source has no Testing folder of its own (a flat pool of classes)"]})
    return pd.DataFrame(rows).set_index("class")


def nearest_markdown(nn: pd.DataFrame) -> str:
    """What the copy audit of the prepared splits found."""
    if nn.empty:
        return "No test or no training images: nothing to audit."
    found = int(nn["copy"].ne("").sum())
    verdict = (
        "none has a copy in training or validation: the draw kept every copy cluster on one side"
        if not found
        else f"**{found} have a copy in training or validation** (listed below; `--keep-duplicates` keeps them)"
    )
    return (
        f"Every test image was compared with every training and validation image by the same copy rule "
        f"`prepare` splits by. Of {len(nn)} test images, {verdict}. The histogram shows each test image's "
        f"closest training image as it is or mirrored, and the closest pairs are shown as images whatever their "
        f"score. Copies under other transforms (a rotation, a strong crop, a neighbouring slice of the same "
        f"patient) are not ruled out."
    )


def plot_nearest(nn: pd.DataFrame, flag: bool = True):
    """Histogram of each test image's best similarity to a training image, with the copy rule's
    threshold (``flag``; the CLIP-embedding audit has none)."""
    from vptlib.data.copies import SIMILAR

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(nn.similarity, bins=40, color="#4c72b0")
    how = nn["matched as"].iloc[0] if flag is False and len(nn) else "thumbnail cosine"
    if flag:
        ax.axvline(SIMILAR, color="#c44e52", ls="--", label=f"a copy at {SIMILAR}")
        ax.legend(loc="upper left")
    ax.set_xlabel(f"similarity of the nearest training/validation image ({how})")
    ax.set_ylabel("test images")
    fig.tight_layout()
    plt.close(fig)
    return fig


def nearest_pairs(nn: pd.DataFrame, data_root: str | Path, k: int = 6):
    """The ``k`` most similar (test, nearest training) pairs as images, side by side (their
    file names are in :func:`nearest_table`)."""
    root = Path(data_root)
    top = nn.head(k)
    cols = max(1, len(top))
    side = style.COLUMN_INCHES / cols
    fig, axes = plt.subplots(2, cols, figsize=(style.COLUMN_INCHES, 2 * side + 0.9), squeeze=False)
    for j, r in enumerate(top.to_dict("records")):
        for i, (path, label) in enumerate(((r["test"], f"test {j + 1}"), (r["nearest"], r["split"]))):
            ax = axes[i, j]
            ax.imshow(Image.open(root / path).convert("L"), cmap="gray")
            note = f"\n{r['similarity']:.3f}" if i else ""
            ax.set_title(f"{label}{note}", fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    plt.close(fig)
    return fig


def nearest_table(nn: pd.DataFrame) -> pd.DataFrame:
    """The test images with a copy in training or validation, or the closest five when none has."""
    copies = nn[nn["copy"] != ""]
    out = (copies if len(copies) else nn.head(5)).copy()
    out["similarity"] = out.similarity.map(lambda v: f"{v:.4f}")
    for column in ("test", "nearest"):  # the file's name: its split and class are columns of their own
        if column in out:
            out[column] = out[column].map(lambda p: Path(str(p)).name)
    return out.reset_index(drop=True).set_index("test")
