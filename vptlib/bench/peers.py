"""vptlib's VPT step beside the implementations a user would pick instead, in one process.

Three implementations of one algorithm, over the same frozen weights, prompts and head,
timed in turn (:func:`~vptlib.bench.timing.interleaved_times`) so that load on the machine
slows them alike:

* ``vptlib``: :class:`~vptlib.methods.visual_prompt.PromptedVisionEncoder` as a run trains
  it: layers computed at the rows the next step reads (:func:`~vptlib.models.fast_layer.layer_rows`),
  frozen weights cast once to the autocast dtype, the run's attention kernel;
* ``kmnp``: a port of KMnP/vpt's ``PromptedTransformer`` (``src/models/vit_prompt/vit.py``)
  to Hugging Face's CLIP tower (:class:`KMnPPrompted`): ``incorporate_prompt`` concatenates
  the prompts after CLS, ``forward_deep_prompt`` replaces them with one ``cat`` before every
  later layer and runs whole layers, the final norm runs over the whole sequence before CLS
  is taken; the frozen weights stay fp32 under autocast and attention is eager (explicit
  matmuls and softmax, as KMnP's ViT ``Attention`` computes it);
* ``hf``: vptlib's own encoder with ``skip_unused_rows=False``: Hugging Face's whole
  ``CLIPEncoderLayer`` with autograd through QuickGELU, on vptlib's casting and kernel.

Before timing, :func:`check_equal` requires the three to give the same logits and prompt
gradients in fp32 (within :data:`TOLERANCE`): a faster step of a different function would
prove nothing. Memory is the bytes autograd keeps for the backward (the activations, and
the low-precision weight copies autocast makes), counted the same way for all three by
:func:`saved_bytes`; the model's own weights are not counted.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch
from torch import nn

from vptlib.methods import build
from vptlib.runs.devices import attention_kernel, autocast, cast_frozen, pick_device, set_attention
from vptlib.runs.flops import count

from .timing import bench_model, interleaved_times

PEERS = ("vptlib", "kmnp", "hf")
DEPTHS = ("vpt_shallow", "vpt_deep")
TOLERANCE = 1e-4  # fp32 logits and prompt gradients, absolute
TARGET = 0.7  # vptlib's step at most this fraction of the KMnP-style step


class KMnPPrompted(nn.Module):
    """KMnP/vpt's prompted ViT, ported line for line to ``CLIPVisionTransformer``.

    CLIP differs from KMnP's ViT only where the tower does: a ``pre_layrnorm`` after the
    embeddings (CLIP's ``ln_pre``, which also normalises the prompts) and ``post_layernorm``
    as the encoder norm. The prompts, head and frozen tower are copies of ``model``'s.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        enc = model.encoder
        self.vision = copy.deepcopy(enc.vision)
        self.num_tokens = enc.num_tokens
        self.prompt_embeddings = nn.Parameter(enc.prompts.detach().clone()[None])  # (1, P, D)
        deep = enc.deep_prompts
        self.deep_prompt_embeddings = nn.Parameter(deep.detach().clone()) if deep is not None else None
        self.head = copy.deepcopy(model.head)

    def incorporate_prompt(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.vision.embeddings(pixel_values)  # (B, 1+N, D)
        b = x.shape[0]
        return torch.cat((x[:, :1], self.prompt_embeddings.expand(b, -1, -1), x[:, 1:]), dim=1)  # (B, 1+P+N, D)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.vision.pre_layrnorm(self.incorporate_prompt(pixel_values))
        b = x.shape[0]
        for i, layer in enumerate(self.vision.encoder.layers):
            if i > 0 and self.deep_prompt_embeddings is not None:  # forward_deep_prompt
                deep = self.deep_prompt_embeddings[i - 1].expand(b, -1, -1)
                x = torch.cat((x[:, :1], deep, x[:, 1 + self.num_tokens :]), dim=1)
            x = layer(x, None)  # the whole layer, every row
        encoded = self.vision.post_layernorm(x)  # KMnP's encoder_norm, over the whole sequence
        return self.head(encoded[:, 0].float())

    def prompt_grads(self) -> list[torch.Tensor]:
        grads = [self.prompt_embeddings.grad[0]]
        return grads + ([self.deep_prompt_embeddings.grad] if self.deep_prompt_embeddings is not None else [])


def _vptlib_grads(model: nn.Module) -> list[torch.Tensor]:
    enc = model.encoder
    return [enc.prompts.grad] + ([enc.deep_prompts.grad] if enc.deep else [])


def build_peers(kind: str, clip, precision: str, dev: torch.device) -> dict[str, nn.Module]:
    """The three implementations of ``kind`` (``vpt_shallow`` or ``vpt_deep``), equal in value."""
    torch.manual_seed(0)
    ours = build(kind, clip, 4).to(dev).train()
    # The head starts at zero in a run; with it the logits and every prompt gradient would
    # be zero, and the equality check would compare zeros.
    nn.init.normal_(ours.head.weight, std=1.0)
    kmnp = KMnPPrompted(ours).to(dev).train()
    hf = copy.deepcopy(ours)
    hf.encoder.skip_unused_rows = False
    for m in (ours, hf):  # as the engine prepares a run
        cast_frozen(m, precision)
        set_attention(m, attention_kernel(dev, precision))
    set_attention(kmnp, "eager")  # KMnP's ViT computes attention with explicit matmuls
    return {"vptlib": ours, "kmnp": kmnp, "hf": hf}


def _grads(name: str, model: nn.Module) -> list[torch.Tensor]:
    return model.prompt_grads() if name == "kmnp" else _vptlib_grads(model)


def check_equal(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> float:
    """The largest absolute difference from vptlib's logits and prompt gradients (fp32 models).

    Raises ``AssertionError`` above :data:`TOLERANCE`.
    """
    out = {}
    for name, m in models.items():
        m.zero_grad(set_to_none=True)
        logits = m(x)
        nn.functional.cross_entropy(logits, y).backward()
        out[name] = [logits.detach(), *(g.detach() for g in _grads(name, m))]
        m.zero_grad(set_to_none=True)
    worst = 0.0
    for name in PEERS[1:]:
        for a, b in zip(out["vptlib"], out[name], strict=True):
            worst = max(worst, (a - b).abs().max().item())
    if worst > TOLERANCE:
        raise AssertionError(f"the peers compute different functions: max |difference| {worst:.2e} > {TOLERANCE}")
    return worst


def saved_bytes(model: nn.Module, loss_fn) -> int:
    """Bytes of the tensors autograd saves for ``loss_fn()``'s backward, each storage once,
    ``model``'s own parameters left out (they are held either way)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def _steps(models: dict[str, nn.Module], x, y, precision: str, dev: torch.device):
    """One SGD step of each implementation, as a function; and its loss alone (for memory)."""

    def step_of(model: nn.Module):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-6)

        def loss():
            with autocast(dev, precision):
                logits = model(x)
            return nn.functional.cross_entropy(logits.float(), y)

        def step():
            opt.zero_grad(set_to_none=True)
            loss().backward()
            opt.step()

        return step, loss

    return {name: step_of(m) for name, m in models.items()}


def measure_peers(
    precisions: tuple[str, ...], batch: int, rounds: int, steps: int, warmup: int, tiny: bool, device: str
) -> dict[str, Any]:
    """Every (depth, precision): the equality check, then each implementation's step
    seconds per round (medians of ``steps`` interleaved calls), FLOPs and saved bytes."""
    dev = pick_device(device)
    clip, size = bench_model(tiny)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(dev)
    y = (torch.arange(batch) % 4).to(dev)
    out: dict[str, Any] = {}
    for kind in DEPTHS:
        max_diff = check_equal(build_peers(kind, clip, "fp32", dev), x, y)
        for prec in precisions:
            models = build_peers(kind, clip, prec, dev)
            fns = _steps(models, x, y, prec, dev)
            per_round: dict[str, list[float]] = {name: [] for name in PEERS}
            for i in range(rounds):
                times = interleaved_times({n: f[0] for n, f in fns.items()}, dev, steps, warmup if i == 0 else 0)
                for name, t in times.items():
                    per_round[name].append(statistics.median(t))
            out[f"{kind}/{prec}"] = {
                "max_difference_fp32": max_diff,
                **{
                    name: {
                        "rounds": per_round[name],
                        "seconds_per_step": statistics.median(per_round[name]),
                        "flops_per_step": count(fns[name][0]),
                        "saved_bytes": saved_bytes(models[name], fns[name][1]),
                    }
                    for name in PEERS
                },
            }
            print(
                f"peers {kind}/{prec}: "
                + ", ".join(f"{n} {out[f'{kind}/{prec}'][n]['seconds_per_step']:.3f} s" for n in PEERS),
                flush=True,
            )
    return out


def matmul_peak(device: str, precision: str, n: int = 4096, reps: int = 5) -> float:
    """FLOP/s of the best of ``reps`` ``torch.mm`` calls of two ``n x n`` matrices: what this
    machine's matrix units reach at ``precision`` when nothing else limits them."""
    dev = pick_device(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    times = interleaved_times({"mm": lambda: torch.mm(a, b)}, dev, reps, warmup=1)["mm"]
    return 2 * n**3 / min(times)
