"""The benchmark's measurements and its target verdicts (timings themselves live in `make bench`)."""

from __future__ import annotations

import json

import pytest

from vptlib import bench
from vptlib.atomic import write_json


def test_measure_one_configuration_in_process():
    for kind in ("forward", "vpt_deep", "linear"):
        r = bench.measure(kind, "fp32", batch=4, steps=1, warmup=0, tiny=True, device="cpu")
        assert r["seconds_per_step"] > 0 and r["images_per_s"] > 0 and r["peak_bytes"] > 0
        assert ("own_forward_seconds" in r) == ("plain_forward_seconds" in r) == (kind == "vpt_deep")


def test_warm_up_lasts_until_two_calls_agree():
    import time

    import torch

    from vptlib.bench.timing import step_times

    durations = iter([0.08, 0.06, 0.02] + [0.02] * 20)  # kernels still being built in the first two calls
    calls = []

    def fn():
        calls.append(1)
        time.sleep(next(durations))

    times = step_times(fn, torch.device("cpu"), steps=3, warmup=1)
    assert len(times) == 3 and max(times) < 0.05, times  # none of the slow calls was timed
    assert len(calls) >= 3 + 4  # the slow ones, then two that agree, then the timed ones
    calls.clear()
    assert len(step_times(fn, torch.device("cpu"), steps=2, warmup=0)) == 2 and len(calls) == 2


def test_interleaved_timing_alternates_the_functions_after_each_warms_up():
    import torch

    from vptlib.bench.timing import interleaved_times

    order = []
    times = interleaved_times(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, torch.device("cpu"), steps=3, warmup=1
    )
    assert [len(v) for v in times.values()] == [3, 3]
    # Warm-ups first (each until two calls agree), then a, b, a, b: a burst of load hits both.
    assert order[-6:] == ["a", "b"] * 3 and order[:-6] == sorted(order[:-6])


def test_plain_forward_shares_the_steps_weights_and_process():
    import inspect

    import torch

    from vptlib.bench.timing import _step, bench_model

    clip, size = bench_model(tiny=True)
    x, y = torch.randn(2, 3, size, size), torch.arange(2)
    fns = _step("vpt_deep", clip, x, y, "bf16", torch.device("cpu"), False)
    assert set(fns) == {"step", "own_forward", "plain_forward"}
    tower = inspect.getclosurevars(fns["plain_forward"]).nonlocals["vision"]
    # The prompted model's own frozen tower, cast once: the same weights the step runs through.
    assert tower is inspect.getclosurevars(fns["own_forward"]).nonlocals["model"].encoder.vision
    assert all(
        not p.requires_grad and p.dtype == torch.bfloat16
        for n, p in tower.named_parameters()
        if p.dim() == 2 and "embedding" not in n
    )
    assert set(_step("forward", clip, x, y, "fp32", torch.device("cpu"), False)) == {"step"}


def test_a_feature_cache_method_is_timed_on_its_head_and_costed_with_its_views():
    """CLAP and Tip-Adapter-F train on cached features, as the linear probe does: the bench
    times their head step (never an image), Tip-Adapter-F's with the study's 480 cache keys,
    and the study's cost counts the augmented views they extract and CLAP's epoch over them."""
    import inspect

    import torch

    from vptlib.bench.timing import _step, bench_model
    from vptlib.bench.verdicts import _feature_cache_of

    clip, _ = bench_model(tiny=True)
    no_images, y = torch.zeros(4, 1), torch.arange(4)  # a head step never reads the pixels
    for kind in ("linear", "clap", "tip_adapter_f"):
        fns = _step(kind, clip, no_images, y, "fp32", torch.device("cpu"), False)
        assert set(fns) == {"step"}
        fns["step"]()
    tip = inspect.getclosurevars(fns["step"]).nonlocals["model"]
    assert tip.head.keys.shape[0] == 480
    assert _feature_cache_of("clap") == (20, True) and _feature_cache_of("tip_adapter_f") == (10, False)
    assert _feature_cache_of("linear") == (0, False) and _feature_cache_of("coop") is None


def _fake(fwd=1.0, vpt=2.0, vpt16=1.0, mem_vpt=2.0, mem_full=3.0, data=400.0, fast=True):
    res = {}
    for kind in ("forward", *bench.METHODS):
        for prec in ("fp32", "bf16"):
            s = {"forward": fwd, "vpt_shallow": vpt, "vpt_deep": vpt, "linear": 0.005}.get(kind, 3.0)
            if prec == "bf16":
                s = {"forward": fwd / 2, "vpt_shallow": vpt16, "vpt_deep": vpt16, "linear": 0.005}.get(kind, 1.5)
            mem = {"vpt_shallow": mem_vpt, "vpt_deep": mem_vpt, "full": mem_full}.get(kind, 1.0)
            res[f"{kind}/{prec}"] = {
                "kind": kind,
                "precision": prec,
                "seconds_per_step": s,
                "images_per_s": 32 / s,
                "peak_bytes": mem * 1e9,
            }
    return {
        "machine": "m",
        "device": "cpu",
        "batch": 32,
        "tiny": False,
        "torch": "x",
        "bf16_fast": fast,
        "results": res,
        "data_images_per_s": data,
        "linear_probe": {
            "images": 384,
            "cached_s": 13.0,
            "recompute_s": 180.0,
            "one_pass_s": 12.0,
            "cached_over_one_pass": 13 / 12,
            "recompute_over_one_pass": 15.0,
        },
    }


def test_target_verdicts():
    ok = {t: v for t, _, v in bench.targets(_fake())}
    assert set(ok.values()) == {"PASS"}, ok
    own = _fake(vpt16=1.2)  # bf16: 2.4x the plain forward, but 2.0x its own (longer) forward
    own["results"]["vpt_deep/bf16"]["own_forward_rounds"] = [0.6]
    got = {t: v for t, _, v in bench.targets(own)}
    assert got["vpt_deep: bf16 step <= 2.3x a no-grad forward"] == "FAIL"
    assert got["vpt_deep: bf16 step <= 2.3x its own no-grad forward (diagnostic)"] == "PASS"
    assert "vpt_shallow: bf16 step <= 2.3x its own no-grad forward (diagnostic)" not in got  # not measured
    # The forward timed in the step's own process replaces the separate one, round by round.
    same = _fake(vpt16=1.2)
    same["results"]["vpt_deep/bf16"]["plain_forward_rounds"] = [0.55]
    got = {t: (m, v) for t, m, v in bench.targets(same)}
    assert got["vpt_deep: bf16 step <= 2.3x a no-grad forward"] == ("2.18x", "PASS")
    assert got["vpt_shallow: bf16 step <= 2.3x a no-grad forward"][1] == "FAIL"  # no in-process forward
    bad = {t: v for t, _, v in bench.targets(_fake(vpt=3.0, vpt16=2.5, mem_vpt=2.9, data=50.0))}
    assert bad["vpt_deep: fp32 step <= 2.3x a no-grad forward"] == "FAIL"
    assert bad["vpt_deep: bf16 step >= 1.8x faster than fp32"] == "FAIL"
    assert bad["vpt_deep: peak memory <= 0.8x full fine-tuning (AdamW)"] == "FAIL"
    assert bad["data pipeline >= 5x frozen bf16 forward images/s"] == "FAIL"
    fp32_only = _fake(fast=False)
    fp32_only["results"] = {k: v for k, v in fp32_only["results"].items() if k.endswith("fp32")}
    only = {t: (m, v) for t, m, v in bench.targets(fp32_only)}
    assert only["vpt_deep: bf16 step >= 1.8x faster than fp32"] == ("not measured", "N/A")
    assert "data pipeline >= 5x frozen fp32 (no bf16 here) forward images/s" in only
    assert bench.markdown(fp32_only).count("| fp32 |") == 1 + len(bench.METHODS)
    na = {t: v for t, _, v in bench.targets(_fake(fast=False))}
    assert na["vpt_shallow: bf16 step >= 1.8x faster than fp32"] == "N/A"


def test_markdown_and_plot(tmp_path):
    r = _fake()
    md = bench.markdown(r)
    assert md.count("| PASS |") == 12 and "| forward | fp32 | 1.000 | one round |" in md
    bench.plot(r, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0


def test_readme_section_is_written_by_the_benchmark(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_START}\nold\n{bench.README_END}\noutro\n")
    assert bench.update_readme(readme, "| new | table |\n")
    assert readme.read_text() == f"intro\n{bench.README_START}\n| new | table |\n{bench.README_END}\noutro\n"
    plain = tmp_path / "OTHER.md"
    plain.write_text("no markers\n")
    assert not bench.update_readme(plain, "x") and plain.read_text() == "no markers\n"


def test_study_cost_estimate_from_step_times():
    from vptlib import REPO
    from vptlib.study.book import load_profile

    r = _fake()
    profile = load_profile(REPO / "profiles" / "full.yaml")
    cost = bench.study_cost(r, profile)
    rows = {x["what"]: x for x in cost["rows"]}
    assert cost["precision"] == "bf16"  # the fake machine has fast bf16
    # vpt_deep: KMnP/vpt's 10 x 4 grid on the tuning seed, then each of the 5 reported seeds
    # afresh; the L-BFGS probe is one fit, whatever the seeds
    assert rows["zero_shot"]["runs"] == 1 and rows["vpt_deep"]["runs"] == 40 + 5 and rows["linear"]["runs"] == 1
    assert rows["full"]["runs"] == 10 * 4 + 5  # lr x weight decay (the reference's size), then the seeds
    # vpt_deep, per seed: 50 epochs x 12 steps x 1.0 s (bf16), 50 validation passes over 96 images
    # and one final pass over 384 + 416 images, at the bf16 forward's 0.5 s per 32 images.
    per_image = 0.5 / 32
    assert rows["vpt_deep"]["seconds"] / 45 == pytest.approx(50 * 12 * 1.0 + 50 * 96 * per_image + 800 * per_image)
    # the few-shot sweep: at each of 7 K, four trained methods and the L-BFGS probe (its K-shot subset is
    # the seed's) once per seed, zero-shot once
    assert rows["sweep fewshot"]["runs"] == 7 * (5 * 3 + 1) and rows["sweep prompts"]["runs"] == 2 * 4 * 3
    # The studies beside the main one: PubMedCLIP tunes and seeds its twelve methods as the main
    # study does (zero-shot, the probe and GDA once; ProLIP, CLAP, Tip-Adapter-F, CoOp and CLIP-SVD
    # once per seed, no grid; both VPTs, CLIP-LoRA and full fine-tuning a grid, then the seeds);
    # the fixed protocol runs its thirteen once per seed, no grid (the probe and GDA once).
    assert rows["backbone pubmedclip"]["runs"] == 1 + 1 + 1 + 5 * 5 + 4 * (40 + 5)
    assert rows["protocol fixed"]["runs"] == 1 + 1 + 11 * 5
    assert rows["backbone biomedclip"]["runs"] == 1 + 1 + 1 + 3 * 5  # the frozen-feature methods
    assert rows["backbone pubmedclip"]["seconds"] > rows["vpt_deep"]["seconds"] + rows["vpt_shallow"]["seconds"]
    assert cost["total_seconds"] == sum(x["seconds"] for x in cost["rows"])
    assert "| **total** |" in bench.cost_markdown(cost)
    assert cost["images"] == [384, 96, 320] and "PROFILE=full` (384 training" in bench.cost_markdown(cost)


def test_the_whole_dataset_profile_is_costed_from_its_own_sizes(tmp_path):
    import json

    from vptlib import REPO
    from vptlib.bench import cli
    from vptlib.bench.verdicts import KAGGLE_AUDIT, split_sizes
    from vptlib.study.book import load_profile

    whole = load_profile(REPO / "profiles" / "kaggle-full.yaml")
    train, val, test = split_sizes(whole)
    # what prepare drew from the audited real images: one image per copy cluster, a fifth of
    # them in test, a fifth of the rest in validation
    record = json.loads(KAGGLE_AUDIT.read_text())
    drawn = record["kaggle_full_split"]
    assert (train, val, test) == (drawn["train"], drawn["val"], drawn["test"])
    assert train + val + test <= record["clusters"]["count"] and abs(test - 0.2 * (train + val + test)) < 0.02 * test
    assert abs(val - 0.2 * (train + val)) <= 4
    full, kaggle = cli.study_costs(_fake())
    assert (full["profile"], kaggle["profile"]) == ("full", "kaggle-full")
    # about 5x the training images at a fifth of the VPT epochs: about the cost of one VPT run.
    per_run = {c["profile"]: {x["what"]: x["seconds"] / x["runs"] for x in c["rows"]} for c in (full, kaggle)}
    assert 0.8 < per_run["kaggle-full"]["vpt_deep"] / per_run["full"]["vpt_deep"] < 1.6
    # --render recomputes both estimates from a saved result, and the table shows both.
    r = {**_fake(), "study_cost": full}
    (tmp_path / "m.json").write_text(json.dumps(r))
    cli.main(["--render", str(tmp_path / "m.json")])
    md = (tmp_path / "m.md").read_text()
    assert (
        "PROFILE=full`" in md
        and f"PROFILE=kaggle-full` ({train:,} training, {val:,} validation and {test:,} test" in md
    )


def _with_rounds(r: dict, key: str, values: list[float]) -> None:
    r["results"][key]["rounds"] = values
    r["results"][key]["seconds_per_step"] = sorted(values)[len(values) // 2]


def test_a_verdict_needs_every_round_to_agree():
    r = _fake()
    for key in r["results"]:  # three quiet rounds: every configuration as in _fake
        _with_rounds(r, key, [r["results"][key]["seconds_per_step"]] * 3)
    r["data_rounds"] = [400.0] * 3
    assert {v for _, _, v in bench.targets(r)} == {"PASS"}
    # A burst of load in round 2 slowed only the bf16 VPT-deep step: the speed-up fails there alone.
    _with_rounds(r, "vpt_deep/bf16", [1.0, 1.4, 1.0])
    got = {t: (m, v) for t, m, v in bench.targets(r)}
    assert got["vpt_deep: bf16 step >= 1.8x faster than fp32"] == ("2.00x (1.43 to 2.00)", bench.NOISY)
    # A slow round for every configuration alike leaves every per-round ratio, and so the verdict, intact.
    for key in r["results"]:
        v = r["results"][key]["rounds"]
        _with_rounds(r, key, [v[0], 3 * v[1], v[2]])
    _with_rounds(r, "vpt_deep/bf16", [1.0, 3.0, 1.0])
    r["data_rounds"] = [400.0, 400.0 / 3, 400.0]
    assert {v for _, _, v in bench.targets(r)} == {"PASS"}
    # Slower in every round: FAIL, not noisy.
    _with_rounds(r, "vpt_deep/bf16", [1.5, 4.5, 1.5])
    assert dict((t, v) for t, _, v in bench.targets(r))["vpt_deep: bf16 step >= 1.8x faster than fp32"] == "FAIL"


def test_verdict_rule():
    assert bench.verdict([2.0, 2.1], lambda v: v >= 1.8) == "PASS"
    assert bench.verdict([1.0, 1.7], lambda v: v >= 1.8) == "FAIL"
    assert bench.verdict([1.7, 1.9], lambda v: v >= 1.8) == bench.NOISY


def test_rounds_are_interleaved_and_summarised(monkeypatch):
    from types import SimpleNamespace

    from vptlib.bench import cli

    calls = []

    def fake(kind, prec, args, compile_=False):
        calls.append((kind, prec))
        s = 1.0 + len(calls) / 100
        return {
            "kind": kind,
            "precision": prec,
            "seconds_per_step": s,
            "images_per_s": 32 / s,
            "peak_bytes": len(calls),
        }

    monkeypatch.setattr(cli, "one_process", fake)
    args = SimpleNamespace(rounds=3, batch=32)
    out = cli.measure_rounds([("forward", "fp32", False), ("vpt_deep", "fp32", False)], args)
    assert calls == [("forward", "fp32"), ("vpt_deep", "fp32")] * 3  # A B A B A B, never A A A B B B
    assert out["vpt_deep/fp32"]["rounds"] == [1.02, 1.04, 1.06]
    assert out["vpt_deep/fp32"]["seconds_per_step"] == 1.04 and out["vpt_deep/fp32"]["peak_bytes"] == 6


def test_measure_casts_frozen_layers_as_the_engine_does(monkeypatch):
    seen = []
    import vptlib.bench.timing as measure

    real = measure.cast_frozen
    monkeypatch.setattr(measure, "cast_frozen", lambda m, p: seen.append(p) or real(m, p))
    bench.measure("vpt_shallow", "bf16", batch=2, steps=1, warmup=0, tiny=True, device="cpu")
    assert seen == ["bf16"]
    # The frozen forward, the yardstick of the step ratios, is cast too: its backbone is frozen.
    cast = []
    monkeypatch.setattr(measure, "cast_frozen", lambda m, p: cast.append(real(m, p)))
    bench.measure("forward", "bf16", batch=2, steps=1, warmup=0, tiny=True, device="cpu")
    assert len(cast) == 1 and cast[0] > 0


def test_make_books_time_is_kept_with_its_machine_and_rendered_into_the_readme(tmp_path, monkeypatch):
    import json
    import os
    import time

    from vptlib import REPO
    from vptlib.bench.output import BOOK_TIME_MARKERS, book_time_markdown, book_time_record, update_readme

    monkeypatch.chdir(tmp_path)  # the profile's runs/ is relative
    started = time.time() - 125
    # one run from an earlier build, one from this one; and this build's runs of a sweep and of a
    # variant study (their own folders) count too, but not another profile's
    folders = ("smoke", "smoke", "smoke-prompts", "smoke-protocol-fixed", "other")
    for i, (folder, age) in enumerate(zip(folders, (3600, 10, 10, 10, 10), strict=True)):
        d = tmp_path / "runs" / folder / "vpt_deep" / f"r{i}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text("{}")
        os.utime(d / "metrics.json", (time.time() - age, time.time() - age))
    import torch

    from vptlib.threads import cores

    was = torch.get_num_threads()
    torch.set_num_threads(1)  # as a build under load sizes itself: the machine is still the same
    try:
        rec = book_time_record(REPO / "profiles" / "smoke.yaml", started, tmp_path / "t.json")
    finally:
        torch.set_num_threads(was)
    assert json.loads((tmp_path / "t.json").read_text()) == rec
    assert rec["machine"].endswith(f"-{cores()}t")
    assert rec["profile"] == "smoke" and 124 <= rec["seconds"] <= 135 and rec["cpus"] == os.cpu_count()
    assert (rec["runs_trained"], rec["runs_reused"]) == (3, 1)
    text = book_time_markdown(rec)
    assert (
        f"took {rec['seconds'] // 60} min {rec['seconds'] % 60} s" in text
        and rec["machine"] in text
        and "trained 3 runs" in text
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{BOOK_TIME_MARKERS[0]}\nold\n{BOOK_TIME_MARKERS[1]}\nb\n")
    assert update_readme(readme, text, BOOK_TIME_MARKERS)
    assert text in readme.read_text() and "old" not in readme.read_text()
    assert BOOK_TIME_MARKERS[0] in (REPO / "README.md").read_text()  # the README keeps a place for it
    # The time says what it holds: here neither the install nor the model was made by this build;
    # a fresh clone's build made both (make's install stamp and the tiny model's weights, newer).
    assert (rec["installed"], rec["model_built"]) == (False, False) and "already in place" in text
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()
    (tmp_path / "models" / "tiny-clip").mkdir(parents=True)
    (tmp_path / "models" / "tiny-clip" / "model.safetensors").touch()
    fresh = book_time_record(REPO / "profiles" / "smoke.yaml", started, tmp_path / "t.json")
    assert (fresh["installed"], fresh["model_built"]) == (True, True)
    assert "the install and the model's build included" in book_time_markdown(fresh)


def test_the_book_time_says_how_busy_other_work_kept_the_machine(tmp_path, monkeypatch):
    """other_work: the machine's busy ticks since the Makefile's snapshot, less the build's own
    (make's reaped children), over the seconds: here 30 s in which the machine worked 75 core
    seconds and the build 15, so other work kept 2 cores busy."""
    import os
    import time

    from vptlib.bench import output

    tck = os.sysconf("SC_CLK_TCK")
    # cpu user nice system idle iowait irq softirq steal: busy = all less idle and iowait
    assert output._busy_ticks("cpu  10 1 5 100 7 2 3 0") == 21
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  {10 + 75 * tck} 1 5 100 7 2 3 0\ncpu0 ...\n")
    monkeypatch.setattr(output, "PROC_STAT", stat)
    monkeypatch.setattr(output, "_children_ticks", lambda pid: 40 + 15 * tck)
    snapshot = f"{time.time() - 30} 40 cpu  10 1 5 100 7 2 3 0"
    assert output.other_work(snapshot, 123) == pytest.approx(2.0, abs=0.1)
    # Unknown, never made up: no snapshot (an older Makefile), no /proc, a broken line.
    assert output.other_work(None, 123) is None and output.other_work("1 2", 123) is None
    monkeypatch.setattr(output, "PROC_STAT", tmp_path / "missing")
    assert output.other_work(snapshot, 123) is None


def test_the_children_ticks_are_read_after_the_command_name():
    """/proc/PID/stat's second field is the command in parentheses, which may hold spaces and
    parentheses; cutime and cstime are the 16th and 17th fields. A real child's CPU lands there
    once it is reaped."""
    import os
    import subprocess
    import sys

    from vptlib.bench.output import _children_ticks

    before = _children_ticks(os.getpid())
    subprocess.run(
        [sys.executable, "-c", "import time; t = time.process_time()\nwhile time.process_time() - t < 0.5: pass"],
        check=True,
    )
    assert _children_ticks(os.getpid()) - before >= 0.4 * os.sysconf("SC_CLK_TCK")


def test_an_idle_and_a_loaded_build_are_kept_apart_and_compared(tmp_path):
    from vptlib.bench.output import book_time_block, book_time_key

    base = {"profile": "smoke", "machine": "m-2t", "cpus": 2, "gpu": "no GPU", "date": "d", "commit": "c"}
    base |= {"runs_trained": 1, "runs_reused": 0, "installed": True, "model_built": True}
    idle = {**base, "seconds": 400, "other_work_cores": 0.1}
    busy = {**base, "seconds": 1000, "other_work_cores": 2.0}
    assert book_time_key(idle) == "book-smoke-m-2t.json" and book_time_key(busy) == "book-smoke-m-2t-loaded.json"
    assert book_time_key({**base, "seconds": 1}) == "book-smoke-m-2t.json"  # an older record: no measure of load
    (tmp_path / book_time_key(idle)).write_text(json.dumps(idle))
    assert "beside other work" not in book_time_block(tmp_path, idle)
    (tmp_path / book_time_key(busy)).write_text(json.dumps(busy))
    text = book_time_block(tmp_path, busy)
    first, second = text.split("\n\n")
    assert "6 min 40 s" in first and "16 min 40 s" in second
    assert (
        "beside other work that kept 2 of its cores busy on average (2.5 times the idle build's time above)" in second
    )


def test_the_book_time_has_each_stage(tmp_path):
    """book_stages: the install until the first mark, each stage until the next, the last
    until the end; the README sentence lists them."""
    from vptlib.bench.output import book_stages, book_time_markdown

    marks = tmp_path / "stages.txt"
    marks.write_text("models 1100\nchecks 1190\npages 1195\nhtml 1415\n")
    stages = book_stages(marks, 1000.0, 1440.0)
    assert stages == {"install": 100, "models": 90, "checks": 5, "pages": 220, "html": 25}
    assert book_stages(None, 0, 1) is None and book_stages(tmp_path / "missing", 0, 1) is None
    marks.write_text("models x\n")
    assert book_stages(marks, 0, 1) is None
    rec = {"profile": "smoke", "seconds": 440, "machine": "m", "cpus": 2, "gpu": "no GPU", "date": "d"}
    rec |= {"commit": "c", "runs_trained": 1, "runs_reused": 0, "stages": stages}
    said = "by stage: install 1 min 40 s, models and data 1 min 30 s, checks 5 s, pages 3 min 40 s, HTML 25 s"
    assert said in book_time_markdown(rec)
    # The record is written with sorted keys: read back, the sentence keeps the build's order.
    kept = tmp_path / "book-time.json"
    write_json(kept, rec)
    assert said in book_time_markdown(json.loads(kept.read_text()))
