"""Contrastive fine-tuning of both encoders, FLYP-style (Goyal et al. 2022).

Logits are ``logit_scale * norm(image) @ norm(text_c).T`` against one ensembled
embedding per class, recomputed through the (training) text encoder every step, and
the loss is cross-entropy against the labels. There is one text per class, so
same-class images are never pushed apart. The earlier report used ``arange(batch)``
targets with shared class texts, which keeps a loss of at least log 2 even for
perfect embeddings.

``symmetric=True`` adds the text-side term: each class text that appears in the batch
is classified against the batch images, with every image of that class a positive.
The temperature stays at its pretrained value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Classifier, TrainDefaults
from .text import class_embeddings, class_prompts, tokenize

DEFAULTS = TrainDefaults(epochs=20, lr=1e-5, optimizer="adamw", weight_decay=0.1)


@dataclass
class Options:
    class_names: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None
    synonyms: dict | None = None
    symmetric: bool = False  # add the de-duplicated text-side loss


class ContrastiveCLIP(Classifier):
    method = "clip_contrastive"

    def __init__(self, clip, num_classes: int, opts: Options):
        super().__init__()
        self.clip = copy.deepcopy(clip.model).requires_grad_(True)
        self.clip.logit_scale.requires_grad_(False)
        self.num_classes = num_classes
        self.symmetric = opts.symmetric
        self.prompts = class_prompts(opts.class_names, opts.templates, opts.synonyms)
        tokens, owner = tokenize(clip.tokenizer, self.prompts)
        for k, v in tokens.items():
            self.register_buffer(f"tok_{k}", v, persistent=False)
        self.register_buffer("owner", owner, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = {"input_ids": self.tok_input_ids, "attention_mask": self.tok_attention_mask}
        text = class_embeddings(self.clip, tokens, self.owner, self.num_classes)
        img = F.normalize(self.clip.get_image_features(pixel_values=pixel_values).pooler_output.float(), dim=-1)
        return self.clip.logit_scale.exp() * img @ text.T

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        image_side = F.cross_entropy(logits, labels)
        if not self.symmetric:
            return image_side
        present = labels.unique()
        # Per class text present in the batch: a distribution over the batch's images,
        # uniform over that class's images.
        targets = (labels[None, :] == present[:, None]).float()
        targets = targets / targets.sum(1, keepdim=True)
        text_side = -(targets * F.log_softmax(logits.T[present], dim=1)).sum(1).mean()
        return (image_side + text_side) / 2

    def describe(self) -> str:
        return "both CLIP encoders and projections (FLYP-style loss against class texts)"


def build(clip, num_classes: int, opts: Options) -> ContrastiveCLIP:
    return ContrastiveCLIP(clip, num_classes, opts)
