"""Where a classifier looks: the CLS token's attention in each layer of its vision tower.

Hooks record the input of every ``CLIPEncoderLayer``; from it the attention
weights are recomputed exactly as the layer computes them (pre-LN, query/key
projections, scaled softmax, averaged over heads), whatever attention kernel the
model runs with (SDPA does not return weights). This works for every method whose
classifier runs a CLIP vision tower, including VPT's prompted sequence
``[CLS, prompts, patches]`` and LoRA's adapted projections. Attention is not
explanation: the maps show what the CLS token attends to, not why a class was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.models.clip.modeling_clip import CLIPEncoderLayer


@dataclass
class CLSAttention:
    """CLS-token attention for a batch: per layer, averaged over heads."""

    to_patches: np.ndarray  # (layers, B, grid, grid): attention from CLS to each patch
    to_prompts: np.ndarray  # (layers, B): total attention from CLS to the prompt tokens (0 without prompts)
    to_cls: np.ndarray  # (layers, B): CLS attending to itself


def _vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The CLIP vision transformer inside any of the methods' classifiers."""
    for m in model.modules():
        if hasattr(m, "encoder") and hasattr(getattr(m, "embeddings", None), "patch_embedding"):
            return m
    raise ValueError("the model has no CLIP vision tower to inspect")


def _weights(layer: CLIPEncoderLayer, hidden: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, T) attention probabilities of ``layer`` for input ``hidden``."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    b, t, _ = x.shape
    q = attn.q_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    return torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1)


@torch.no_grad()
def cls_attention(model: torch.nn.Module, pixel_values: torch.Tensor) -> CLSAttention:
    """Run ``model`` on a batch and return its CLS attention in every vision layer."""
    tower = _vision_tower(model)
    layers = list(tower.encoder.layers)
    grid = tower.config.image_size // tower.config.patch_size
    inputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())) for layer in layers]
    try:
        model.eval()(pixel_values)
    finally:
        for h in hooks:
            h.remove()
    patches, prompts, self_ = [], [], []
    for layer, hidden in zip(layers, inputs, strict=True):
        cls = _weights(layer, hidden.float())[:, :, 0, :].mean(1)  # (B, T)
        n_prompts = cls.shape[1] - 1 - grid * grid
        patches.append(cls[:, -grid * grid :].reshape(-1, grid, grid))
        prompts.append(cls[:, 1 : 1 + n_prompts].sum(1))
        self_.append(cls[:, 0])
    return CLSAttention(
        torch.stack(patches).cpu().numpy(), torch.stack(prompts).cpu().numpy(), torch.stack(self_).cpu().numpy()
    )
