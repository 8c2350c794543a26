"""The Results page's method x backbone and protocol sections: each variant study
(:mod:`vptlib.study.variants`) against the main one, method by method.

A variant's runs and the main runs are scored on the same test images (same data folder:
:func:`~vptlib.report.loading.same_test_images` refuses anything else), so each method's
difference between them takes the main table's paired test, which counts the test images
and both sides' seeds (:func:`vptlib.runs.metrics.paired_difference`), and the whole
family of comparisons of one kind is Holm-corrected together.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vptlib.runs.config import SELECTIONS
from vptlib.runs.metrics import paired_difference
from vptlib.study import overrides
from vptlib.study.profile import Profile
from vptlib.study.protocols import PROTOCOLS, SELECT
from vptlib.study.variants import main_label, variants

from .comparison import SIGNIFICANT, difference_columns, p_values_shown, with_holm
from .loading import TITLES, latest_groups, same_test_images, seed_correct


def protocol_note(profile: Profile) -> str:
    """Which protocol the page's main numbers come from, as the code defines it, and the
    overrides of the profile that ``make run`` set and the book keeps."""
    text = f"Every number in the tables above comes from the **{profile.protocol}** protocol: {PROTOCOLS[profile.protocol]}."
    found = overrides.load(overrides.path(profile.runs, profile.profile))
    if found:
        shown = "; ".join(
            f"{TITLES.get(m, m)}: " + ", ".join(f"`{k} = {v}`" for k, v in opts.items()) for m, opts in found.items()
        )
        text += f" Overrides of the profile set by `make run` (`make reset` drops them): {shown}."
    return text


def protocol_definitions(profile: Profile) -> str:
    """Markdown: the main protocol and each other one the profile runs, with the run selection
    each implies (:data:`~vptlib.study.profile.PROTOCOLS`, :data:`~vptlib.runs.config.SELECTIONS`)."""
    lines = []
    for name in [profile.protocol, *profile.protocols]:
        role = "the main study's" if name == profile.protocol else "a variant's"
        lines.append(f"- **{name}** ({role}): {PROTOCOLS[name]}. Each run keeps {SELECTIONS[SELECT[name]]}.")
    return "\n".join(lines)


def _per_seed(profile: Profile) -> dict[str, np.ndarray]:
    """Each method's ``(seeds, test images)`` correctness in ``profile``'s runs folder."""
    return {m: seed_correct(g) for m, g in latest_groups(profile.runs, profile.profile).items()}


def _acc(correct: np.ndarray) -> str:
    accs = 100 * correct.mean(1)  # rounded as the main table rounds before it formats (results_table)
    return f"{round(accs.mean(), 2):.1f}" + (f" ± {round(accs.std(ddof=1), 2):.1f}" if len(accs) > 1 else "")


def versus(profile: Profile, kind: str) -> pd.DataFrame:
    """One row per (variant of ``kind``, method run in both): the two seed-mean accuracies,
    the variant minus the main study with its paired 95% interval and p-value, Holm-corrected
    over every row. Empty when the profile has no such variant or none has finished runs."""
    main = _per_seed(profile)
    rows = []
    for v in variants(profile, kind):
        mine = _per_seed(v.profile)
        both = [m for m in v.methods if m in mine and m in main]
        if both:  # every pair compared must share its test images, not only the first method's
            ours, theirs = (
                latest_groups(profile.runs, profile.profile),
                latest_groups(v.profile.runs, v.profile.profile),
            )
            same_test_images([d for m in both for d in (*ours[m], *theirs[m])])
        for m in both:
            d = paired_difference(mine[m], main[m])
            rows.append(
                {
                    "method": TITLES[m],
                    "variant": v.label,
                    main_label(profile, kind): _acc(main[m]),
                    "variant acc. (%)": _acc(mine[m]),
                    **difference_columns(d),
                }
            )
    return with_holm(pd.DataFrame(rows))


def versus_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: p-values to four decimals, never a bare 0."""
    if table.empty:
        return table
    return p_values_shown(table).set_index(["method", "variant"])


def _columns(profile: Profile, kind: str) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Each study's per-seed correctness (the main one first), and the methods a variant of
    ``kind`` runs, in the registry's order: the ones there is something to compare for."""
    found = variants(profile, kind)
    columns = {main_label(profile, kind): _per_seed(profile)}
    columns.update({v.label: _per_seed(v.profile) for v in found})
    methods = [m for m in TITLES if any(m in v.methods for v in found) and any(m in c for c in columns.values())]
    return columns, methods


def method_by_variant(profile: Profile, kind: str) -> pd.DataFrame:
    """The methods a variant of ``kind`` runs x (the main study and each such variant):
    seed-mean test accuracy ± std ("–": not run there)."""
    columns, methods = _columns(profile, kind)
    return pd.DataFrame(
        {label: [_acc(c[m]) if m in c else "–" for m in methods] for label, c in columns.items()},
        index=pd.Index([TITLES[m] for m in methods], name="test acc. (%)"),
    )


def versus_sentence(table: pd.DataFrame, kind: str) -> str:
    """What the comparison shows, generated from ``table`` (never typed)."""
    what = "another backbone" if kind == "backbone" else "the other protocol"
    if table.empty:
        return f"No method has finished runs on {what} and in the main study yet: there is nothing to compare."
    up = table[(table[SIGNIFICANT] == "yes") & (table["difference (points)"] > 0)]
    down = table[(table[SIGNIFICANT] == "yes") & (table["difference (points)"] < 0)]
    mean = table["difference (points)"].mean()
    return (
        f"Of {len(table)} method comparisons with {what}, {len(up)} are significantly higher and {len(down)} "
        f"significantly lower than the main study after Holm's correction; the rest are within what the test "
        f"images and the seeds can resolve. The mean difference is {mean:+.1f} points."
    )


def plot_versus(profile: Profile, kind: str):
    """Each method a variant of ``kind`` runs: its seed-mean test accuracy in the main study and
    in each such variant, side by side, with ± one standard deviation over seeds."""
    columns, methods = _columns(profile, kind)
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(1, len(methods)) * max(1, len(columns) / 2) + 1.4))
    height = 0.8 / len(columns)
    for j, (label, c) in enumerate(columns.items()):
        ys = [i + (j - (len(columns) - 1) / 2) * height for i in range(len(methods))]
        accs = [100 * c[m].mean(1) if m in c else np.array([np.nan]) for m in methods]
        mean = [a.mean() for a in accs]
        sd = [a.std(ddof=1) if len(a) > 1 else 0.0 for a in accs]
        ax.barh(ys, mean, height=height, xerr=sd, capsize=2, label=label, error_kw={"lw": 0.8})
    ax.set_yticks(range(len(methods)), [TITLES[m] for m in methods])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy (%), seed mean ± sd")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
