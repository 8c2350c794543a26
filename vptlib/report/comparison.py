"""The Results page's comparisons: every method against the reference fixed in the profile,
with a test that counts the test images and the seeds (:func:`vptlib.runs.metrics.paired_difference`),
Holm-corrected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vptlib.runs.metrics import format_p, holm, paired_difference

from .loading import TITLES, latest_groups, same_test_images, seed_correct

POWER = 0.8
DETECTABLE = f"detectable at {POWER:.0%} power (points)"
COMPARISON_RULE = (
    "Each method is compared with the reference method fixed in the profile before any result was seen "
    "(VPT-shallow unless the profile says otherwise), not with the test-set winner. The difference is that of "
    "the seed-mean test accuracies, on the same test images. Its uncertainty counts both the test images "
    "(the paired per-image difference) and each method's seeds (the spread of its per-seed accuracies), "
    "and its 95% interval and p-value use Student's t with Welch-Satterthwaite degrees of "
    "freedom, so that a few seeds are not taken for more evidence than they are. "
    "The p-values are corrected for the number of comparisons (Holm), so the chance of calling any "
    "difference significant when none is real stays at 5% within each family of comparisons: the "
    "comparisons with the reference, the method × backbone comparisons and the protocol comparisons are "
    "three families, each corrected on its own, so across all three together that chance is higher."
)


def significance_table(runs: str | Path, profile: str, reference: str = "vpt_shallow") -> pd.DataFrame:
    """Every method against the pre-registered ``reference``: paired differences, t intervals over images and seeds, Holm."""
    groups = latest_groups(runs, profile)
    if not groups:
        return pd.DataFrame()
    if reference not in groups:  # a partial build: no comparison, rather than another reference
        return missing_reference(reference, profile)
    same_test_images([d for g in groups.values() for d in g])
    per_seed = {m: seed_correct(g) for m, g in groups.items()}
    rows, dfs = [], []
    for method in groups:
        if method == reference:
            continue
        d = paired_difference(per_seed[method], per_seed[reference])
        dfs.append(d["df"])
        rows.append({"reference": TITLES[reference], "vs": TITLES[method], **difference_columns(d)})
    table = with_holm(pd.DataFrame(rows))
    if not table.empty:
        table["df"] = [round(d, 1) for d in dfs]
        table[DETECTABLE] = detectable(table)
    return table


def detectable(table: pd.DataFrame, power: float = POWER) -> list[float]:
    """Per row, the true difference this design finds with probability ``power``: the
    minimum detectable difference of the row's t test, from its standard error and degrees
    of freedom (read off its 95% interval), with the noncentral t, at Holm's strictest level
    (5% / the number of rows, which the largest difference must pass). A real difference
    smaller than this is more likely missed than found: "not shown different" is not "equal"."""
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student

    level = 0.05 / len(table)
    out = []
    for ci, df in zip(table["paired 95% CI"], table["df"], strict=True):
        lo, hi = (float(x) for x in ci.split(" to "))
        df = float(df) if np.isfinite(df) else 1e6
        se = (hi - lo) / (2 * float(student.ppf(0.975, df)))
        crit = float(student.ppf(1 - level / 2, df))

        def short(delta: float, crit: float = crit, df: float = min(df, 1e4)) -> float:  # power(delta) - power
            lower = np.nan_to_num(nct.cdf(-crit, df, delta))  # the far tail: scipy may give NaN for ~0
            return float(nct.sf(crit, df, delta) + lower) - power

        if se <= 0:
            out.append(0.0)
            continue
        # With few degrees of freedom (two seeds: df near 1.5) the noncentral t is so wide that
        # power reaches 80% only far past the critical value: widen the bracket until it does.
        upper = crit + 6.0
        while short(upper) < 0 and upper < 1e6:
            upper *= 2
        out.append(round(se * brentq(short, 0.0, upper), 1) if short(upper) >= 0 else float("inf"))
    return out


SIGNIFICANT = "significant (Holm, 5%)"


def difference_columns(d: dict[str, float]) -> dict[str, object]:
    """A :func:`~vptlib.runs.metrics.paired_difference` as a table's columns, in points."""
    return {
        "difference (points)": round(100 * d["diff"], 2),
        "paired 95% CI": f"{100 * d['ci_low']:.1f} to {100 * d['ci_high']:.1f}",
        "p": d["p_value"],
    }


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its p-values Holm-corrected as one family, and which survive at 5%."""
    if table.empty:
        return table
    table["Holm p"] = holm(list(table["p"]))
    table[SIGNIFICANT] = np.where(table["Holm p"] < 0.05, "yes", "no")
    return table


def p_values_shown(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a page shows it, one number of decimals per column: p-values to four
    (never a bare 0), differences and degrees of freedom to one, like their intervals; a
    detectable difference past 100 points (a design that can see no difference an accuracy
    can have) as "> 100"."""
    out = table.assign(p=table["p"].map(format_p), **{"Holm p": table["Holm p"].map(format_p)})
    if "difference (points)" in out:
        out["difference (points)"] = out["difference (points)"].map(lambda v: f"{v:.1f}")
    if "df" in out:
        out["df"] = out["df"].map(lambda v: f"{v:.1f}")
    if DETECTABLE in out:
        out[DETECTABLE] = out[DETECTABLE].map(lambda v: "> 100" if v > 100 else f"{v:.1f}")
    return out


def missing_reference(reference: str, profile: str) -> pd.DataFrame:
    """The comparison table of a build without its reference's runs: empty, saying why. The
    reference is never replaced by another method, since that would change what every
    comparison means after the results are in."""
    table = pd.DataFrame()
    table.attrs["missing_reference"] = reference
    table.attrs["profile"] = profile
    return table


def significance_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: p-values to four decimals, never a bare 0."""
    if table.empty:
        return table
    return p_values_shown(table).set_index(["reference", "vs"])


def signed(table: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    sig = table[SIGNIFICANT] == "yes"
    better = list(table.loc[sig & (table["difference (points)"] > 0), "vs"])
    worse = list(table.loc[sig & (table["difference (points)"] < 0), "vs"])
    return better, worse, list(table.loc[~sig, "vs"])


def significance_sentence(table: pd.DataFrame) -> str:
    """What the table says, following each difference's sign and its corrected p-value."""
    if "missing_reference" in table.attrs:
        ref = table.attrs["missing_reference"]
        return (
            f"**No comparison:** the reference method, {TITLES.get(ref, ref)} (`{ref}`), has no finished runs in "
            "this build, and the comparisons are never made against another method instead. Run it with "
            f"`make run NB={ref} PROFILE={table.attrs['profile']}`, then rebuild."
        )
    if table.empty:
        return "There is only one method, so there is nothing to compare."
    ref = table["reference"].iloc[0]
    better, worse, same = signed(table)
    parts = [f"Reference: {ref}."]
    if better:
        parts.append(f"Significantly more accurate than it after the Holm correction: {', '.join(better)}.")
    if worse:
        parts.append(f"Significantly less accurate: {', '.join(worse)}.")
    if same:
        parts.append(
            f"Not distinguishable from it on this test set: {', '.join(same)}; the table's ranking among "
            "these should not be read as real."
        )
    return " ".join(parts)
