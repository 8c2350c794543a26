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

In training, a layer is computed at the rows the forward reads later only
(:meth:`PromptedVisionEncoder.rows_needed`, through :func:`vptlib.models.fast_layer.layer_rows`),
and returns the same layout as HF's whole layer, which runs in evaluation: both paths
compute one algorithm (a test compares them).

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

from vptlib.models.fast_layer import layer_rows

from .base import Classifier, TrainDefaults, flag, linear_head, vision_model

# KMnP/vpt's tune_vtab.py (find_best_lrwd) keeps the smallest lr among grid points tied on
# validation accuracy, "for stability".
DEFAULTS = TrainDefaults(epochs=50, lr=0.05, optimizer="sgd", weight_decay=1e-4, grid_ties="smallest_lr")


@dataclass
class Options:
    prompt_tokens: int = flag(
        5,
        "--prompt-tokens",
        "VPT: prompt tokens per layer, at most 4x the model's "
        "sequence length (200 for ViT-B/32) (default 5, the official default)",
    )
    prompt_dropout: float = flag(0.0, "--prompt-dropout", "VPT: dropout on the prompts (default 0.0, official)")


def prompt_init_bound(patch_size: int, hidden: int) -> float:
    """VPT's uniform bound, ``sqrt(6 / (3 * patch^2 + D))`` (Xavier on the patch projection).

    Uses the *patch* size: 0.039528 for ViT-B/32. The image size would make it 6.3x smaller.
    """
    return math.sqrt(6.0 / (3 * patch_size**2 + hidden))


class PromptedVisionEncoder(nn.Module):
    """A frozen HF CLIP vision tower with trainable prompt tokens.

    Args:
        vision_model: ``clip.vision_model`` (a ``CLIPVisionModel`` in transformers 5.x).
            Its parameters are frozen in place.
        num_tokens: prompt tokens ``P`` per layer; 0 reproduces ``pooler_output``.
        deep: if True, layers 1..L-1 each get their own prompts (VPT-deep); otherwise
            only the input sequence is prompted (VPT-shallow).
        dropout: dropout on the prompt embeddings (official default 0.0).

    The sequence a layer reads and returns is ``[CLS, prompts, patches]``, addressed by the
    named slices :attr:`CLS`, :attr:`prompt_slots` and :attr:`patches` (and the embeddings'
    ``[CLS, patches]`` by :attr:`CLS` and :attr:`EMBEDDED_PATCHES`); prompts enter it through
    :meth:`insert_prompts` only.

    Attributes:
        skip_unused_rows: in training, compute each layer only at the rows whose output is
            used (:func:`~vptlib.models.fast_layer.layer_rows`). Evaluation always runs HF's
            whole layers, so that hooks on them (the attention maps) see every layer's full
            input. Default True; False runs HF's whole layers in training too (the tests
            compare the two).
    """

    skip_unused_rows: bool = True
    CLS = slice(0, 1)  # row 0, in the embeddings' output and in every layer's sequence
    EMBEDDED_PATCHES = slice(1, None)  # the patches in the embeddings' output (no prompts yet)

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
        self.prompt_slots = slice(1, 1 + num_tokens)
        self.patches = slice(1 + num_tokens, None)

    def layer_prompts(self, layer: int, batch: int) -> torch.Tensor:
        """``(B, P, D)``: the prompts inserted before ``layer`` (0: the input's)."""
        prompts = self.prompts if layer == 0 else self.deep_prompts[layer - 1]
        # Expand before dropout so that every image gets its own dropout mask, as in VPT.
        return self.prompt_dropout(prompts.expand(batch, -1, -1))

    def rows_needed(self, layer: int) -> list[slice]:
        """The rows of ``layer``'s output that the rest of the forward reads."""
        if layer == len(self.vision.encoder.layers) - 1:
            return [self.CLS]  # only CLS reaches post_layernorm
        if self.deep:
            return [self.CLS, self.patches]  # the prompt rows are replaced before the next layer
        return [slice(None)]

    def insert_prompts(self, cls: torch.Tensor, prompts: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``[CLS, prompts, patches]``, the sequence every layer reads: one ``cat``, for the input
        and for every deep layer alike."""
        return torch.cat([cls, prompts.to(cls.dtype), patches], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised pixels -> ``(B, D)`` post-LN CLS feature."""
        v = self.vision
        e = v.embeddings(pixel_values)  # (B, 1+N, D): CLS and patches, position embeddings added
        b = e.shape[0]
        x = self.insert_prompts(e[:, self.CLS], self.layer_prompts(0, b), e[:, self.EMBEDDED_PATCHES])  # (B, 1+P+N, D)
        x = v.pre_layrnorm(x)  # ln_pre normalises the prompts too
        for i, layer in enumerate(v.encoder.layers):
            if self.deep and i > 0:  # deep: layer i reads prompts of its own in the prompt slots
                x = self.insert_prompts(x[:, self.CLS], self.layer_prompts(i, b), x[:, self.patches])
            x = self._layer(layer, x, i)  # (B, 1+P+N, D)
        return v.post_layernorm(x[:, self.CLS].squeeze(1))  # (B, D)

    def _layer(self, layer: nn.Module, x: torch.Tensor, i: int) -> torch.Tensor:
        """Layer ``i`` on ``x = [CLS, prompts, patches]``, returned in the same layout. In
        training, only the rows the forward reads afterwards (:meth:`rows_needed`) are
        computed; every other row keeps its input value and is never read (the prompt slots
        a deep layer replaces, every row but CLS after the last layer)."""
        if not (self.skip_unused_rows and self.training):
            return layer(x, None)
        keep = self.rows_needed(i)
        out = layer_rows(layer, x, keep)  # (B, rows of keep, D), in the order of keep
        if keep == [slice(None)]:
            return out
        parts, at = [], 0
        for rows in (self.CLS, self.prompt_slots, self.patches):
            n = x[:, rows].shape[1]
            parts.append(out[:, at : at + n] if rows in keep else x[:, rows])
            at += n if rows in keep else 0
        return torch.cat(parts, dim=1)


class VPTClassifier(Classifier):
    trainable_patterns = (
        "encoder.prompts",
        "encoder.deep_prompts",
        "head.*",
    )  # what it trains (the contract test holds it to this)

    def __init__(self, vision, num_classes: int, opts: Options, deep: bool):
        super().__init__()
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
        raise ValueError(
            f"prompt_tokens must be in [0, {limit}] (4x this model's sequence length), got {opts.prompt_tokens}"
        )
    if not 0 <= opts.prompt_dropout < 1:
        raise ValueError(f"prompt_dropout must be in [0, 1), got {opts.prompt_dropout}")


def build_shallow(clip, num_classes: int, opts: Options) -> VPTClassifier:
    _check(opts, vision_model(clip))
    return VPTClassifier(vision_model(clip), num_classes, opts, deep=False)


def build_deep(clip, num_classes: int, opts: Options) -> VPTClassifier:
    _check(opts, vision_model(clip))
    return VPTClassifier(vision_model(clip), num_classes, opts, deep=True)
