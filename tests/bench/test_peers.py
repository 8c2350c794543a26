"""The peers the bench times vptlib's VPT against: one function, three implementations, and
the verdicts and tables made from them (the timings themselves live in `make bench`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from vptlib.bench import peers
from vptlib.bench.timing import bench_model


@pytest.fixture(scope="module")
def tiny():
    clip, size = bench_model(tiny=True)
    gen = torch.Generator().manual_seed(1)
    return clip, torch.randn(4, 3, size, size, generator=gen), torch.arange(4) % 4


@pytest.mark.parametrize("kind", peers.DEPTHS)
def test_the_three_implementations_compute_one_function(tiny, kind):
    clip, x, y = tiny
    models = peers.build_peers(kind, clip, "fp32", torch.device("cpu"))
    assert set(models) == set(peers.PEERS)
    assert peers.check_equal(models, x, y) <= peers.TOLERANCE
    # Not vacuous: the logits and the prompt gradients compared are not zero.
    logits = models["kmnp"](x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert logits.abs().min() > 0 and all(g.abs().max() > 1e-6 for g in models["kmnp"].prompt_grads())
    # vptlib's training path skips rows; the other two run whole layers.
    assert models["vptlib"].encoder.skip_unused_rows and not models["hf"].encoder.skip_unused_rows
    assert models["vptlib"].training and models["kmnp"].training


def test_a_peer_that_computes_something_else_is_refused(tiny):
    clip, x, y = tiny
    models = peers.build_peers("vpt_deep", clip, "fp32", torch.device("cpu"))
    with torch.no_grad():  # KMnP's deep prompts, but no longer the same as vptlib's
        models["kmnp"].deep_prompt_embeddings.mul_(-1.0)
    with pytest.raises(AssertionError, match="different functions"):
        peers.check_equal(models, x, y)


def test_the_kmnp_port_replaces_deep_prompts_by_concatenation(tiny):
    """KMnP's forward_deep_prompt: the sequence stays 1 + P + N long, prompts after CLS."""
    clip, x, _ = tiny
    model = peers.build_peers("vpt_deep", clip, "fp32", torch.device("cpu"))["kmnp"]
    lengths = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
        for layer in model.vision.encoder.layers
    ]
    model(x)
    for h in hooks:
        h.remove()
    n = (clip.model.config.vision_config.image_size // clip.model.config.vision_config.patch_size) ** 2
    assert lengths == [1 + model.num_tokens + n] * len(model.vision.encoder.layers)


def test_work_and_memory_are_counted_alike_for_each(tiny):
    clip, x, y = tiny
    dev = torch.device("cpu")
    models = peers.build_peers("vpt_shallow", clip, "fp32", dev)
    fns = peers._steps(models, x, y, "fp32", dev)
    flops = {n: peers.count(fns[n][0]) for n in peers.PEERS}
    saved = {n: peers.saved_bytes(models[n], fns[n][1]) for n in peers.PEERS}
    # Whole layers in both peers (their attention kernels differ); vptlib's last layer runs for CLS only.
    assert min(flops["kmnp"], flops["hf"]) > flops["vptlib"] > 0, flops
    assert saved["kmnp"] > saved["vptlib"] > 0 and saved["hf"] > saved["vptlib"], saved
    # Counting memory leaves no gradient behind and does not step the optimiser.
    assert all(p.grad is None for m in models.values() for p in m.parameters())


def test_matmul_peak_is_a_rate():
    assert peers.matmul_peak("cpu", "fp32", n=256, reps=2) > 1e8


def _result(ours: list[float], kmnp: list[float]) -> dict:
    def impl(rounds):
        return {"rounds": rounds, "seconds_per_step": sorted(rounds)[1], "flops_per_step": 2e11, "saved_bytes": 5e8}

    return {"vpt_deep/bf16": {"max_difference_fp32": 0.0, "vptlib": impl(ours), "kmnp": impl(kmnp), "hf": impl(ours)}}


def test_the_peer_target_needs_every_round():
    from vptlib.bench.verdicts import NOISY, peer_targets

    name = f"vpt_deep: bf16 step <= {peers.TARGET}x the KMnP-style step"
    assert peer_targets({"peers": _result([1.0, 1.0, 1.0], [2.0, 1.5, 1.6])}) == [
        (name, "0.62x (0.50 to 0.67)", "PASS")
    ]
    assert peer_targets({"peers": _result([1.0, 1.0, 1.0], [2.0, 1.2, 1.6])})[0][2] == NOISY
    assert peer_targets({"peers": _result([1.0, 1.0, 1.0], [1.1, 1.2, 1.3])})[0][2] == "FAIL"
    assert peer_targets({}) == []


def test_the_peers_table_and_fraction_of_peak():
    from vptlib.bench.output import peers_markdown

    r = {"peers": _result([1.0, 1.0, 1.0], [2.0, 1.5, 1.6]), "peak_flops": {"bf16": 1e12}}
    md = "\n".join(peers_markdown(r))
    # 200 GFLOP in 1.0 s on a 1 TFLOP/s peak: 20%; KMnP's median round 1.6 s: 12.5%.
    assert "| vpt_deep | bf16 | vptlib | 1.000 | 1.00 (1.00 to 1.00) | 500 | 200.0 | 20.0 |" in md
    assert "| vpt_deep | bf16 | KMnP/vpt-style port | 1.600 | 1.60 (1.50 to 2.00) | 500 | 200.0 | 12.5 |" in md
    assert peers_markdown({}) == []


def test_peers_only_needs_a_saved_result(tmp_path, capsys):
    from vptlib.bench import cli

    assert cli.main(["--peers-only", "--tiny", "--out", str(tmp_path)]) == 2
    assert "run `make bench`" in capsys.readouterr().out


def test_peers_only_merges_into_the_saved_result(tmp_path, monkeypatch):
    from vptlib.bench import cli

    saved = {"machine": "m", "kept": 1, "peers": {"old": 1}}
    monkeypatch.setattr(cli, "machine_name", lambda dev: "m")
    monkeypatch.setattr(cli, "_peers_and_peak", lambda args, precs: {"peers": {}, "peak_flops": {"fp32": 1.0}})
    written = []
    monkeypatch.setattr(cli, "_write", lambda r, out, tiny: written.append(r) or 0)
    (tmp_path / "m-tiny.json").write_text(json.dumps(saved))
    assert cli.main(["--peers-only", "--tiny", "--out", str(tmp_path)]) == 0
    assert written == [{"machine": "m", "kept": 1, "peers": {}, "peak_flops": {"fp32": 1.0}}]


def test_peers_run_in_one_process_of_their_own(monkeypatch):
    from vptlib.bench import cli

    seen = []
    monkeypatch.setattr(cli, "run_json", lambda flags, args: seen.append(flags) or {"vpt_deep/fp32": {}})
    monkeypatch.setattr(cli, "matmul_peak", lambda device, prec, n: 1.0)
    args = SimpleNamespace(tiny=True, device="cpu", rounds=3)
    out = cli._peers_and_peak(args, ("fp32", "bf16"))
    assert seen == [["--peers-one", "fp32", "bf16", "--rounds", "3"]]
    assert out == {"peak_flops": {"fp32": 1.0, "bf16": 1.0}, "peers": {"vpt_deep/fp32": {}}}
