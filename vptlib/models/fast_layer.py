"""A CLIP encoder layer computed at some rows only: the training path of a frozen tower.

:func:`layer_rows` is HF's ``CLIPEncoderLayer`` with less work around it:

- only the rows whose output is used (the caller names them): with VPT, the last layer
  needs only CLS, and in deep mode no layer needs the prompt rows that the next layer
  replaces (about 7% (shallow) and 14% (deep) of a ViT-B/32 step's matmul work, and as
  much again in the backward);
- under autocast, each layer norm's output is cast to the low-precision dtype once, not
  once per projection that reads it;
- QuickGELU as ``silu(1.702 x) / 1.702`` with a one-kernel backward (:class:`QuickGELU`)
  instead of autograd's five elementwise passes through ``x * sigmoid(1.702 x)``.

With a frozen backbone, memory-bound elementwise passes like these cost as much as the
matmuls a frozen layer saves, and decide whether a step stays near twice a forward
(``make bench`` measures it). ``tests/methods/test_vpt.py`` checks it against HF's layer.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import QuickGELUActivation
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward


class QuickGELU(torch.autograd.Function):
    """CLIP's ``x * sigmoid(1.702 x)``, computed as ``silu(1.702 x) / 1.702``.

    The same function; its derivative is ``silu'(1.702 x)``, so the backward is one fused
    ``silu_backward`` pass over the saved ``1.702 x``. Autograd through HF's
    ``QuickGELUActivation`` spends five elementwise passes over the MLP's widest tensor
    (three multiplies, ``sigmoid_backward``, an add), which are memory-bound and were about
    a fifth of a bf16 VPT step on a CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        z = x * 1.702
        ctx.save_for_backward(z)
        return nn.functional.silu(z).mul_(1 / 1.702)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, z)


def _low_precision(t: torch.Tensor) -> torch.Tensor:
    # Autocast casts an fp32 activation at every op that reads it: a layer norm's output
    # three times (q, k, v). Cast it once; the residual stream itself stays fp32.
    dev = t.device.type
    return t.to(torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else t


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = mlp.fc1(_low_precision(x))
    h = QuickGELU.apply(h) if isinstance(mlp.activation_fn, QuickGELUActivation) else mlp.activation_fn(h)
    return mlp.fc2(h)


def layer_rows(layer: nn.Module, x: torch.Tensor, keep: slice | list[slice]) -> torch.Tensor:
    """``layer(x)`` at the rows ``keep`` only (a slice, or slices concatenated in order).

    ``layer`` is a pre-LN ``CLIPEncoderLayer``. Keys and values need every row, because
    every token attends to all of them; the queries, the output projection, the residuals
    and the MLP act on each row alone, so they run for the kept rows only. The attention
    kernel is the one the layer's config names (eager or SDPA), called as the layer calls it.
    Under autocast each layer norm's output is cast once, and QuickGELU runs as
    :class:`QuickGELU` (another activation runs as the layer's own module).
    """
    attn = layer.self_attn
    keep = [keep] if isinstance(keep, slice) else keep

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t[:, keep[0]] if len(keep) == 1 else torch.cat([t[:, k] for k in keep], dim=1)

    b, n, _ = x.shape
    h = _low_precision(layer.layer_norm1(x))
    q_in = rows(h)
    q = attn.q_proj(q_in).view(b, q_in.shape[1], -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
    kernel = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    out, _ = kernel(attn, q, k, v, None, scaling=attn.scale, dropout=attn.dropout if attn.training else 0.0)
    x = rows(x) + attn.out_proj(out.reshape(b, q_in.shape[1], -1).contiguous())
    return x + _mlp(layer.mlp, layer.layer_norm2(x))
