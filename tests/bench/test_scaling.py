"""The bench's scaling rows: every stage measured at growing sizes, its growth judged."""

from __future__ import annotations

import json
import math
import re

from vptlib.bench import cli, scaling
from vptlib.data.prepare import STAGES


def _fake(times_at: dict[str, callable], n=(800, 2400, 7024)) -> dict:
    return {
        "pixels": 512,
        "precision": "bf16",
        "batch": 32,
        "sizes": [{"images": k, "seconds": {s: f(k) for s, f in times_at.items()}} for k in n],
    }


def test_the_stated_n_log_n_exponent_is_the_codes():
    """The docstring (and so the README's sentence) quotes n log n's exponent over the sizes."""
    k = scaling.n_log_n([8 * scaling.SIZES[0], 8 * scaling.SIZES[-1]])
    assert f"k = {k:.2f}" in " ".join(scaling.__doc__.split())
    assert scaling.exponent([10, 100], [1.0, 100.0]) == 2.0 and math.isclose(scaling.exponent([10, 100], [2, 20]), 1)


def test_a_stage_growing_faster_than_n_log_n_fails_and_the_pairwise_search_is_held_to_its_share():
    linear = lambda n: n / 100  # noqa: E731
    times = {"read and hash": linear, "duplicate search": lambda n: (n / 7024) ** 2, "write": linear}
    times |= {s: linear for s in scaling.STAGES_RUN} | {scaling.EVAL: lambda n: (n / 1000) ** 1.5}
    got = {t: (m, v) for t, m, v in scaling.targets(_fake(times))}
    assert len(got) == len(times)
    ok = {t: v for t, (_, v) in got.items()}
    assert ok[next(t for t in got if t.startswith("one VPT-shallow epoch"))] == "PASS"
    assert ok[next(t for t in got if t.startswith(scaling.EVAL))] == "FAIL"  # k = 1.5
    dup = next(t for t in got if t.startswith("duplicate search"))
    # 1 s of 70.24 + 1 + 70.24 s of prepare: 0.7%, though it grows as n^2
    assert got[dup] == ("0.7% (k = 2.00)", "PASS")
    times["duplicate search"] = lambda n: (n / 1000) ** 2
    assert {t: v for t, _, v in scaling.targets(_fake(times))}[dup] == "FAIL"


def test_the_table_has_a_row_per_stage_in_the_order_the_work_runs():
    rec = _fake({s: lambda n: n / 1000 for s in [scaling.EVAL, *reversed(STAGES)]})
    rec |= {"machine": "m", "device": "cpu", "torch": "x", "tiny": False}
    md = scaling.markdown(json.loads(json.dumps(rec, sort_keys=True)))  # as a saved record reads back
    assert md.startswith("Machine: m (cpu)")
    assert "| stage | 800 images (s) | 2,400 images (s) | 7,024 images (s) | k |" in md
    assert re.search(r"\| read and hash \| 0\.80 \| 2\.40 \| 7\.02 \| 1\.00 \|", md)
    rows = [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| ") and " images" not in line]
    assert rows[:4] == [*STAGES, scaling.EVAL] and md.count("| PASS |") == 3
    assert md.count("| FAIL |") == 1  # the duplicate search at a third of prepare


def test_scaling_runs_every_stage_on_the_tiny_model(tmp_path, monkeypatch):
    """The real measurement at the test sizes: prepare on a phantom source, the caches, a VPT epoch."""
    monkeypatch.setattr(scaling, "REPO", tmp_path)  # the generated sources go under tmp_path/build
    s = scaling.measure_scaling(tiny=True, precision="fp32", batch=16, device="cpu")
    assert [x["images"] for x in s["sizes"]] == [8 * k for k in scaling.TINY_SIZES]
    stages = [*STAGES, *scaling.STAGES_RUN, scaling.EVAL]
    assert all(list(x["seconds"]) == stages and min(x["seconds"].values()) > 0 for x in s["sizes"])
    assert len(list((tmp_path / "build" / "bench-scaling").iterdir())) == 2  # kept for the next run
    assert len(scaling.targets({**s, "machine": "m", "device": "cpu", "torch": "x"})) == len(stages)


def test_scaling_only_writes_a_record_of_its_own_and_renders_it_again(tmp_path, monkeypatch):
    """No saved bench result needed; the record names its machine, and --render-scaling rewrites it."""
    monkeypatch.setattr(cli, "machine_name", lambda dev: "m")
    asked = []
    fake = _fake({s: lambda n: n / 100 for s in STAGES})
    monkeypatch.setattr(cli, "run_json", lambda flags, args: asked.append(flags) or fake)
    assert cli.main(["--scaling-only", "--tiny", "--out", str(tmp_path), "--force-bf16"]) == 0
    assert asked == [["--scaling-one", "bf16"]]
    rec = json.loads((tmp_path / "scaling-m-tiny.json").read_text())
    assert rec["machine"] == "m" and rec["sizes"] == fake["sizes"] and rec["tiny"] is True
    md = (tmp_path / "scaling-m-tiny.md").read_text()
    (tmp_path / "scaling-m-tiny.md").unlink()
    assert cli.main(["--render-scaling", str(tmp_path / "scaling-m-tiny.json")]) == 0
    assert (tmp_path / "scaling-m-tiny.md").read_text() == md
