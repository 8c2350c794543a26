"""CLIP-SVD: fine-tune only the singular values of CLIP's weights (Koleilat et al. 2025;
HealthX-Lab/CLIP-SVD ``svf_utils/svf_torch.py``, ``svf_utils/utils.py``, ``train.py``).

Every targeted ``nn.Linear`` is factored once, when the method is built, as
``W = U diag(s) V^T`` (``d_nsvd`` at full rank: ``torch.svd``, all ``min(out, in)``
singular values kept), and only ``s`` trains; ``U``, ``V`` and the bias stay frozen
(``SVD_Linear``). Its forward, one operation a line::

    h = x @ V          # (B, L, r)   fc_V
    h = h * s          # (B, L, r)   vector_S
    y = h @ U.T + b    # (B, L, out) fc_U

The targets are the code's for ``include_train_layers: all``
(``set_clip_trainable_parameters``): in every layer of **both** encoders the query, key,
value and output projections and both MLP layers. With ``L`` layers of width ``D`` per
encoder the trained parameters are ``sum over encoders of L * 6 * D`` (each target's
``min(out, in)`` is ``D``): 12 * 6 * (768 + 512) = 92,160 on ViT-B/32.

No new head: the logits are CLIP's, the frozen temperature times the cosine similarity of
the image to one text per class, both through the adapted encoders at every step. The
text is the code's template for BTMRI (``configs/few_shot/btmri.yaml``: "a photo of a {}.")
with BTMRI's class names (``data/BTMRI/split_BTMRI.json``). The budget is
``configs/few_shot/btmri.yaml``'s: AdamW (betas 0.9, 0.999) at lr 0.007, weight decay 0,
100 epochs of batch 32, cosine decay to 1e-6; the last epoch is the result.

Where this differs from the paper's code: the cosine decays to 0, the study's one schedule,
once over the run's steps; the code's ``run_biomedical_training`` (the path BTMRI takes)
builds ``CosineAnnealingLR(optimizer, total_epochs, eta_min=1e-6)`` but steps it after every
batch, so with more than one batch an epoch its lr falls to 1e-6 after ``total_epochs``
steps and climbs back, cycling through the run: a bug this study does not copy. The
augmentation is the study's (:class:`~vptlib.data.augment.Augment`), not
``RandomResizedCrop(scale=(0.08, 1))`` with flips; the precision is the study's, not fp16
autocast for the text tower.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, TextOptions, TrainDefaults
from .text import ClassTokens, class_prompts

# configs/few_shot/btmri.yaml: lr 0.007, train_epochs 100, batch_size 32, weight_decay 0.
DEFAULTS = TrainDefaults(epochs=100, lr=0.007, optimizer="adamw", weight_decay=0.0)
BATCH_SIZE = 32  # configs/few_shot/btmri.yaml (the profiles set the study's batch size)
TEMPLATE = "a photo of a {}."  # configs/few_shot/btmri.yaml: template
# The class names of BTMRI (data/BTMRI/split_BTMRI.json), the Kaggle data's classes.
NAMES = {
    "glioma": ("glioma tumor",),
    "meningioma": ("meningioma tumor",),
    "notumor": ("normal brain",),
    "pituitary": ("pituitary tumor",),
}
# set_clip_trainable_parameters: q, k, v and the output projection (train_q/k/v/o_proj) and
# the MLP (train_mlp), named as transformers' CLIPEncoderLayer names them.
TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


@dataclass
class Options(TextOptions):
    templates: tuple[str, ...] | None = (TEMPLATE,)
    synonyms: dict | None = field(default_factory=lambda: dict(NAMES))


class SingularValues(nn.Module):
    """An ``nn.Linear`` as ``U diag(s) V^T``: ``s`` trains, ``U``, ``V`` and the bias do not."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        # train.py: clip_model.float(), then d_nsvd's torch.svd in float32
        u, s, vh = torch.linalg.svd(linear.weight.detach().float(), full_matrices=False)
        self.register_buffer("u", u)  # (out, r)
        self.register_buffer("vh", vh)  # (r, in)
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(len(u))
        self.register_buffer("bias", bias)  # (out,)
        self.s = nn.Parameter(s)  # (r,), r = min(out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.vh)  # (..., r)
        h = h * self.s  # (..., r)
        return F.linear(h, self.u, self.bias)  # (..., out)


def factor(model: nn.Module, targets: tuple[str, ...] = TARGETS) -> int:
    """Replace every ``encoder.layers.<i>.<target>`` linear of ``model`` by :class:`SingularValues`;
    returns how many were replaced."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ".encoder.layers." in name and name.endswith(targets)
    ]
    for name, module in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SingularValues(module))
    return len(found)


class CLIPSVD(Classifier):
    trainable_patterns = ("clip.*.s",)  # what it trains (the contract test holds it to this)

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        self.clip = copy.deepcopy(clip.model).requires_grad_(False)
        self.factored = factor(self.clip)
        self.register_buffer("logit_scale", self.clip.logit_scale.detach().exp().clone())
        every = class_prompts(opts.class_names, opts.templates, opts.synonyms)
        self.text_prompts = {c: ps[:1] for c, ps in every.items()}  # one text per class
        self.tokens = ClassTokens(clip.tokenizer, self.text_prompts)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        text = self.clip.get_text_features(**self.tokens.batch())
        img = self.clip.get_image_features(pixel_values=pixel_values)
        text = F.normalize(text.pooler_output.float(), dim=-1)  # (C, E)
        img = F.normalize(img.pooler_output.float(), dim=-1)  # (B, E)
        return self.logit_scale * img @ text.T  # (B, C)

    def describe(self) -> str:
        return f"the singular values of {self.factored} weight matrices in both encoders (CLIP-SVD)"


def build(clip, num_classes: int, opts: Options) -> CLIPSVD:
    return CLIPSVD(clip, num_classes, opts)
