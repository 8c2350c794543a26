"""VPT-shallow and VPT-deep (Jia et al. 2022): trainable prompt tokens in a frozen CLIP
vision encoder, plus a linear head on its post-LN CLS feature.

Adapted from KMnP/vpt ``src/models/vit_prompt/vit.py`` to Hugging Face's
``CLIPVisionTransformer``. The forward pass (:class:`PromptedVisionEncoder`), top to bottom:

1. ``embeddings``: patch embedding + CLS + position embeddings -> ``(B, 1 + N, D)``;
2. insert ``P`` prompt tokens right after CLS. Prompts get no position embedding;
3. ``pre_layrnorm``: CLIP's ``ln_pre`` normalises the prompts too;
4. the encoder layers. In *deep* mode the prompt slots are **replaced** by a fresh
   set before every layer after the first, so the sequence stays ``1 + P + N`` long;
5. ``post_layernorm`` on CLS: equal to ``pooler_output`` when ``P == 0``.

In training, each layer is computed by :func:`layer_rows`, the same function as HF's
layer with less work around it:

- only the rows whose output is used: the last layer only CLS, and in deep mode no layer
  the prompt rows that the next layer replaces (about 7% (shallow) and 14% (deep) of a
  ViT-B/32 step's matmul work, and as much again in the backward);
- under autocast, each layer norm's output is cast to the low-precision dtype once, not
  once per projection that reads it;
- QuickGELU as ``silu(1.702 x) / 1.702`` with a one-kernel backward (:class:`QuickGELU`)
  instead of autograd's five elementwise passes through ``x * sigmoid(1.702 x)``.

With a frozen backbone, memory-bound elementwise passes like these cost as much as the
matmuls a frozen layer saves, and decide whether a step stays near twice a forward
(``make bench`` measures it).

Only the prompts and the head train; every weight of the wrapped tower is frozen.
Trainable parameters with ``C`` classes and width ``D``: shallow ``P*D + D*C + C``;
deep ``L*P*D + D*C + C``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import QuickGELUActivation
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward

from .base import Classifier, TrainDefaults, flag, linear_head, vision_model

DEFAULTS = TrainDefaults(epochs=50, lr=0.05, optimizer="sgd", weight_decay=1e-4)


@dataclass
class Options:
    prompt_tokens: int = flag(5, "--prompt-tokens", "VPT: prompt tokens per layer, at most 4x the model's "
                              "sequence length (200 for ViT-B/32) (default 5, the official default)")  # fmt: skip
    prompt_dropout: float = flag(0.0, "--prompt-dropout", "VPT: dropout on the prompts (default 0.0, official)")


def prompt_init_bound(patch_size: int, hidden: int) -> float:
    """VPT's uniform bound, ``sqrt(6 / (3 * patch^2 + D))`` (Xavier on the patch projection).

    Uses the *patch* size: 0.039528 for ViT-B/32. The image size would make it 6.3x smaller.
    """
    return math.sqrt(6.0 / (3 * patch_size**2 + hidden))


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


class PromptedVisionEncoder(nn.Module):
    """A frozen HF CLIP vision tower with trainable prompt tokens.

    Args:
        vision_model: ``clip.vision_model`` (a ``CLIPVisionModel`` in transformers 5.x).
            Its parameters are frozen in place.
        num_tokens: prompt tokens ``P`` per layer; 0 reproduces ``pooler_output``.
        deep: if True, layers 1..L-1 each get their own prompts (VPT-deep); otherwise
            only the input sequence is prompted (VPT-shallow).
        dropout: dropout on the prompt embeddings (official default 0.0).

    Attributes:
        skip_unused_rows: in training, compute each layer with :func:`layer_rows`, only at
            the rows whose output is used. Evaluation always runs HF's whole layers, so
            that hooks on them (the attention maps) see every layer's full input. Default
            True; False runs HF's whole layers in training too (the tests compare the two).
    """

    skip_unused_rows: bool = True

    def __init__(self, vision_model: nn.Module, num_tokens: int, deep: bool = False, dropout: float = 0.0):
        super().__init__()
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        cfg = vision_model.config
        self.vision = vision_model.requires_grad_(False)
        self.num_tokens = num_tokens
        self.deep = deep
        self.prompt_dropout = nn.Dropout(dropout)
        hidden, layers = cfg.hidden_size, cfg.num_hidden_layers
        bound = prompt_init_bound(cfg.patch_size, hidden)
        self.prompts = nn.Parameter(torch.empty(num_tokens, hidden).uniform_(-bound, bound))
        self.deep_prompts = (
            nn.Parameter(torch.empty(layers - 1, num_tokens, hidden).uniform_(-bound, bound)) if deep else None
        )

    def _expand(self, prompts: torch.Tensor, batch: int) -> torch.Tensor:
        # Expand before dropout so that every image gets its own dropout mask, as in VPT.
        return self.prompt_dropout(prompts.expand(batch, -1, -1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised pixels -> ``(B, hidden)`` post-LN CLS feature."""
        v = self.vision
        x = v.embeddings(pixel_values)  # (B, 1+N, D), position embeddings already added
        b, p = x.shape[0], self.num_tokens
        x = torch.cat([x[:, :1], self._expand(self.prompts, b).to(x.dtype), x[:, 1:]], dim=1)
        x = v.pre_layrnorm(x)
        skip = self.skip_unused_rows and self.training
        last = len(v.encoder.layers) - 1
        for i, layer in enumerate(v.encoder.layers):
            deep = self.deep_prompts is not None
            if deep and i >= 1:
                # Skipping rows, x holds CLS and patches only: the last layer dropped the prompts.
                x = torch.cat([x[:, :1], self._expand(self.deep_prompts[i - 1], b).to(x.dtype),
                               x[:, 1 if skip else 1 + p :]], dim=1)  # fmt: skip
            if not skip:
                x = layer(x, None)
            elif i == last:  # only CLS reaches post_layernorm
                x = layer_rows(layer, x, slice(0, 1))
            elif deep:  # the prompt rows' outputs are replaced before the next layer
                x = layer_rows(layer, x, [slice(0, 1), slice(1 + p, None)])
            else:
                x = layer_rows(layer, x, slice(None))
        return v.post_layernorm(x[:, 0])


class VPTClassifier(Classifier):
    def __init__(self, vision, num_classes: int, opts: Options, deep: bool):
        super().__init__()
        self.method = "vpt_deep" if deep else "vpt_shallow"
        self.encoder = PromptedVisionEncoder(copy.deepcopy(vision), opts.prompt_tokens, deep, opts.prompt_dropout)
        self.head = linear_head(vision.config.hidden_size, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pixel_values).float())

    def describe(self) -> str:
        where = "before every layer (deep)" if self.encoder.deep else "at the input (shallow)"
        return f"{self.encoder.num_tokens} prompt tokens {where} and a linear head"


# Prompts at most 4x the image's own tokens (200 for ViT-B/32's 49 patches + CLS; VPT's
# paper goes to 200 on ViT-B/16's 196 patches): attention cost grows with the square of
# the sequence, and 100,000 prompts would run for hours without finishing an epoch.
MAX_PROMPT_RATIO = 4


def max_prompt_tokens(vision) -> int:
    cfg = vision.config
    return MAX_PROMPT_RATIO * ((cfg.image_size // cfg.patch_size) ** 2 + 1)


def _check(opts: Options, vision) -> None:
    limit = max_prompt_tokens(vision)
    if not 0 <= opts.prompt_tokens <= limit:
        raise ValueError(f"prompt_tokens must be in [0, {limit}] (4x this model's sequence length), "
                         f"got {opts.prompt_tokens}")  # fmt: skip
    if not 0 <= opts.prompt_dropout < 1:
        raise ValueError(f"prompt_dropout must be in [0, 1), got {opts.prompt_dropout}")


def build_shallow(clip, num_classes: int, opts: Options) -> VPTClassifier:
    _check(opts, vision_model(clip))
    return VPTClassifier(vision_model(clip), num_classes, opts, deep=False)


def build_deep(clip, num_classes: int, opts: Options) -> VPTClassifier:
    _check(opts, vision_model(clip))
    return VPTClassifier(vision_model(clip), num_classes, opts, deep=True)
